"""``edgeft fleet``: federated fine-tuning on Flower (simulated, or a Flower App for real devices)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeft.errors import EdgeftError


def _federation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The settings a simulation and a real federation share (see edgeft.fleet.settings)."""
    from edgeft.fleet.payload import ENCODINGS
    from edgeft.fleet.settings import STRATEGIES

    options = [
        click.option("--val", type=click.Path(path_type=Path), required=True,
                     help="Held-out labelled data the server evaluates the global model on after every round."),
        click.option("--rounds", type=click.IntRange(min=1), default=5, show_default=True),
        click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
                     help="Share of the devices asked to train each round."),
        click.option("--local-epochs", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Epochs each device trains on its own data per round."),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
                     help="Devices' learning rate (constant within a round)."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True),
        click.option("--strategy", type=click.Choice(STRATEGIES), default="fedavg", show_default=True,
                     help="Flower's aggregation strategy."),
        click.option("--server-lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
                     help="Server learning rate of fedadam, fedyogi, fedadagrad and fedavgm."),
        click.option("--encoding", type=click.Choice(ENCODINGS), default="fp32", show_default=True,
                     help="What devices send: their tensors (fp32), or the update as fp16 or int8."),
        click.option("--secagg", is_flag=True, help="Secure aggregation (Flower's SecAgg+): the server sees only "
                                                    "the sum of the devices' tensors."),
        click.option("--dp-noise", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Differential privacy: noise multiplier on the aggregate of updates clipped on the "
                          "devices to --dp-clip (0: off)."),
        click.option("--dp-clip", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                     help="L2 norm each device's update is clipped to (with --dp-noise)."),
        click.option("--dp-delta", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-5,
                     show_default=True, help="The delta the privacy budget (epsilon) is reported at."),
        click.option("--text-column", default="text", show_default=True, help="Text column of the data files."),
        click.option("--label-column", default="label", show_default=True, help="Label column of the data files."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--threads", type=click.IntRange(min=1), help="Compute threads per device."),
        click.option("--run-dir", type=click.Path(path_type=Path), default=Path("artifacts/runs/fleet"),
                     show_default=True, help="Where the server writes the federated run (edgeft deploy takes it)."),
        click.option("--force", is_flag=True, help="Replace a run folder (or app) edgeft wrote before."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(artifacts: Path, values: dict[str, Any], **more: Any):
    from edgeft.fleet.settings import FleetSettings

    return FleetSettings(artifacts=str(Path(artifacts).resolve()), val=str(Path(values["val"]).resolve()),
                         run_dir=str(Path(values["run_dir"]).resolve()), rounds=values["rounds"],
                         fraction_train=values["fraction"], local_epochs=values["local_epochs"],
                         batch_size=values["batch_size"], lr=values["lr"], weight_decay=values["weight_decay"],
                         strategy=values["strategy"], server_lr=values["server_lr"], encoding=values["encoding"],
                         secagg=values["secagg"], dp_noise=values["dp_noise"], dp_clip=values["dp_clip"],
                         dp_delta=values["dp_delta"], text_column=values["text_column"],
                         label_column=values["label_column"],
                         seed=values["seed"], threads=values["threads"] or 0, force=values["force"], **more)


def _need_flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError as exc:
        raise EdgeftError("edgeft fleet needs Flower, which is not installed here.", where="edgeft fleet",
                          hint="pip install 'edgeft[fleet]' (Python 3.11 or newer).") from exc


def _check_inputs(artifacts: Path, *files: Path) -> None:
    for path in (artifacts, *files):
        if not Path(path).exists():
            raise EdgeftError(f"{path} does not exist.", where=str(path), hint="check the path.")


@click.group(name="fleet", context_settings={"max_content_width": 100})
def command() -> None:
    """Federated fine-tuning: many devices train locally, a Flower server combines their updates.

    Only the trainable tail travels (about 7 MB for MiniLM last:1, 119 KB for its head on 77
    intents); the result is an edgeft run folder that `edgeft deploy` takes.

    \b
    Examples:
      edgeft fleet simulate artifacts/minilm data.csv --val val.csv --clients 20 --rounds 10
      edgeft fleet app fleet-app artifacts/minilm --val val.csv --min-clients 3   # then flwr run fleet-app
    """


@command.command(name="simulate")
@click.argument("artifacts", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--clients", type=click.IntRange(min=1), default=10, show_default=True, help="Virtual devices.")
@click.option("--partition", type=click.Choice(["iid", "dirichlet"]), default="iid", show_default=True,
              help="How DATA is split among the devices: at random, or non-IID by label.")
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="Dirichlet concentration of --partition dirichlet (small: each device sees few labels).")
@_federation_options
@click.option("--central", is_flag=True, help="Also train centrally on all of DATA (rounds x local epochs) and "
                                              "draw its accuracy beside the federation's.")
@click.option("--no-plot", is_flag=True, help="Do not write accuracy.png into the run folder.")
@click.option("-v", "--verbose", is_flag=True, help="Show Flower's and Ray's own log.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and per-round history as JSON on stdout.")
def simulate_command(artifacts: Path, data: Path, clients: int, partition: str, alpha: float, central: bool,
                     no_plot: bool, verbose: bool, as_json: bool, **values: Any) -> None:
    """Simulate CLIENTS devices, each holding a part of DATA, fine-tuning ARTIFACTS with Flower.

    Flower's simulation engine runs the same ServerApp and ClientApp as a real federation, on
    this machine. Per round: the global model's validation accuracy and loss, bytes sent per
    device, wall time. The run folder holds metrics.jsonl, summary.json, partition.json and
    accuracy.png.

    \b
    Examples:
      edgeft fleet simulate artifacts/minilm train.csv --val val.csv --clients 100 --fraction 0.1 \\
          --partition dirichlet --alpha 0.5 --rounds 30 --local-epochs 2 --lr 3e-3 --central
      edgeft fleet simulate artifacts/minilm train.csv --val val.csv --encoding int8 --json
      edgeft fleet simulate artifacts/minilm train.csv --val val.csv --secagg --dp-noise 0.3
    """
    _need_flower()
    _check_inputs(artifacts, data, values["val"])
    from edgeft.fleet.simulate import simulate
    from edgeft.reporter import CallbackReporter, Reporter

    settings = _settings(artifacts, values)
    reporter = Reporter() if as_json else CallbackReporter(lambda text: click.echo(text, err=True))
    result = simulate(settings, data, clients, partition, alpha, plot=not no_plot, reporter=reporter, verbose=verbose,
                      central=settings.rounds * settings.local_epochs if central else None)
    if as_json:
        click.echo(json.dumps({"summary": result.summary, "history": result.history}, indent=2))
        return
    metric = result.summary["metric"]
    for entry in result.history:
        val = entry.get("val") or {}
        sent = entry.get("bytes_sent_per_client")
        click.echo(f"round {entry['round']:>3}  {metric} {val.get(metric, float('nan')):.4f}  loss "
                   f"{val.get('loss', float('nan')):.4f}" + (f"  sent {sent / 1024:.1f} KiB/device" if sent else "")
                   + f"  {entry['seconds']:.1f} s")
    best, dp = result.summary["best"], result.summary.get("dp")
    if dp:
        click.echo(f"differential privacy: epsilon {dp['epsilon']} at delta {dp['delta']} over {dp['releases']} rounds"
                   if dp.get("epsilon") is not None else f"differential privacy: {dp['note']}")
    click.echo(f"best round {best['round']} ({metric} {best[metric]:.4f}); run folder {result.run_dir}"
               + (f"; plot {result.plot}" if result.plot else ""))


@command.command(name="app")
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("artifacts", type=click.Path(path_type=Path))
@_federation_options
@click.option("--min-clients", type=click.IntRange(min=1), default=2, show_default=True,
              help="Devices that must be connected before round 1 starts.")
@click.option("--min-train-clients", type=click.IntRange(min=1),
              help="Replies a round needs [default: --min-clients]; lower, a round survives devices dropping out.")
@click.option("--round-timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds a round waits for the devices' replies.")
@click.option("--simulate", "simulate_data", type=click.Path(path_type=Path),
              help="For a simulation run by flwr run: split this data file among --clients virtual devices "
                   "(into FOLDER-devices, beside the app) instead of naming each device's data in --node-config.")
@click.option("--clients", type=click.IntRange(min=1), default=10, show_default=True,
              help="Virtual devices of --simulate (the connection's options.num-supernodes).")
@click.option("--partition", type=click.Choice(["iid", "dirichlet"]), default="iid", show_default=True)
@click.option("--alpha", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True)
def app_command(folder: Path, artifacts: Path, min_clients: int, min_train_clients: int | None,
                round_timeout: float, simulate_data: Path | None, clients: int, partition: str, alpha: float,
                **values: Any) -> None:
    """Write FOLDER, a Flower App that fine-tunes ARTIFACTS on real devices (run it with flwr run).

    The server evaluates on --val and writes --run-dir; each device is a Flower SuperNode started
    with its own data and package in --node-config.

    \b
    Examples:
      edgeft fleet app fleet-app artifacts/minilm-raspberry-pi-5 --val val.csv --min-clients 3
      flower-superlink --insecure                                             # the server machine
      flower-supernode --insecure --superlink SERVER:8000 \\
          --node-config "data='/home/pi/notes.csv' artifacts='/home/pi/minilm-raspberry-pi-5'"
      flwr run fleet-app my-superlink --stream   # a connection named in Flower's config.toml
      edgeft fleet app sim-app artifacts/minilm --val val.csv --simulate train.csv --clients 20
      flwr run sim-app local-sim --stream   # [superlink.local-sim] options.num-supernodes = 20
    """
    _need_flower()
    _check_inputs(artifacts, values["val"], *([simulate_data] if simulate_data else []))
    from edgeft.fleet.app_folder import devices_folder, write_app

    devices = devices_folder(folder) if simulate_data else None
    settings = _settings(artifacts, values, min_available_clients=min_clients,
                         min_train_clients=min_train_clients or min_clients, round_timeout=round_timeout,
                         partitions=str(devices) if devices else "")
    target = write_app(folder, settings, force=values["force"], devices=(simulate_data, clients, partition, alpha)
                       if simulate_data else None)
    click.echo(str(target))
