"""``edgeft fleet simulate``: N virtual devices on this machine, through Flower's simulation engine.

The data file is split into one local dataset per virtual device (IID, or non-IID by label with
a Dirichlet concentration: :mod:`edgeft.fleet.partition`), written as files the way real devices
hold their data; Flower's simulation engine (Ray) then runs the same ServerApp and ClientApp a
real deployment runs, with each virtual device a SuperNode whose ``partition-id`` names its
file. The result is an edgeft run folder (deployable), with per-round accuracy, loss, bytes sent
per device and wall time in ``metrics.jsonl``, a summary, and optionally a plot of accuracy
against rounds beside a centralised run on the union of the devices' data.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeft.errors import EdgeftError
from edgeft.fleet.partition import split_data
from edgeft.fleet.settings import FleetSettings
from edgeft.outputs import check_output
from edgeft.reporter import Reporter

PLOT_FILE = "accuracy.png"
PARTITION_FILE = "partition.json"


@dataclass(frozen=True)
class SimulationResult:
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path
    plot: Path | None


def simulate(settings: FleetSettings, data: Path, clients: int, scheme: str = "iid", alpha: float = 0.5,
             central: dict[str, Any] | int | None = None, plot: bool = True, reporter: Reporter | None = None,
             cpus_per_client: float = 1.0, verbose: bool = False) -> SimulationResult:
    """Run ``settings.rounds`` federated rounds over ``clients`` virtual devices sharing ``data``.

    ``central``: the baseline drawn beside the federation's accuracy: a number of epochs to train
    centrally on all of ``data`` first (:func:`centralised`, into ``RUN_DIR-central``), or the
    summary of a centralised run made elsewhere, or None.
    """
    from edgeft.fleet.client_app import make_client_app
    from edgeft.fleet.server_app import check_run_dir, make_server_app

    reporter = reporter or Reporter()
    data = Path(data)
    if not data.exists():
        raise EdgeftError(f"The data path {data} does not exist.", where=str(data), hint="check the path.")
    check_run_dir(settings)  # both run folders are checked before any training
    if isinstance(central, int):
        central_dir = Path(settings.run_dir + "-central")
        check_output(central_dir, settings.force, "run", "--run-dir",
                     keep_hint="pass --force to replace it (and the federated run), or another --run-dir.")
        reporter.message(f"centralised baseline: training on all of the data ({central_dir})")
        central = centralised(settings, data, central_dir, central)
    reporter.message(f"simulating {clients} devices for {settings.rounds} rounds")
    scratch = Path(tempfile.mkdtemp(prefix="edgeft-fleet-sim-"))
    try:
        parts, counts = split_data(settings, data, clients, scheme, alpha, scratch / "devices")
        reporter.message(f"{clients} virtual devices, {scheme} split"
                         f"{f' (Dirichlet alpha {alpha})' if scheme == 'dirichlet' else ''}: "
                         f"{min(parts.sizes())} to {max(parts.sizes())} examples each")
        per_round = max(1, round(clients * settings.fraction_train))
        settings = replace(settings, partitions=str(scratch / "devices"), min_available_clients=clients,
                           min_train_clients=per_round)  # virtual devices do not drop out
        backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                   "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
                                 "log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.ERROR}}
        partition_record = {"scheme": scheme, "alpha": alpha if scheme == "dirichlet" else None, "seed": settings.seed,
                            "sizes": parts.sizes(), "label_counts": counts}
        extra = {"simulation": {"clients": clients, "clients_per_round": per_round, "partition": scheme,
                                "alpha": partition_record["alpha"], "central": central["after"] if central else None}}

        def also(folder: Path, history: list[dict[str, Any]], summary: dict[str, Any]) -> None:
            (folder / PARTITION_FILE).write_text(json.dumps(partition_record) + "\n", encoding="utf-8")
            if plot:
                _plot(history, central, folder / PLOT_FILE, summary["metric"])

        outcome: dict[str, Any] = {}
        with _process_kept(verbose):
            from flwr.simulation import run_simulation  # sets a Ray variable on first import: inside the guard

            run_simulation(server_app=make_server_app(settings, outcome, extra, also),
                           client_app=make_client_app(settings.run_config()), num_supernodes=clients,
                           backend_config=backend, verbose_logging=verbose)
        if "error" in outcome:
            raise outcome["error"]
        if "summary" not in outcome:
            raise EdgeftError("The federation ended without writing its run (see Flower's log above).",
                              where=settings.run_dir, hint="run again with -v for Flower's full log.")
        run_dir = Path(settings.run_dir)
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        return SimulationResult(outcome["summary"], history, run_dir, run_dir / PLOT_FILE if plot else None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _process_kept:
    """Keep the process as it was: Flower logs every round at INFO and Ray advises about GPUs
    (both kept to errors unless ``verbose``), and Flower's Ray backend rewrites PYTHONPATH (and
    Ray other variables) for its workers; the environment and the loggers are put back after."""

    LOGGERS = ("flwr", "ray")

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def __enter__(self) -> None:
        self.environment = dict(os.environ)
        self.levels = {name: logging.getLogger(name).level for name in self.LOGGERS}
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # what importing flwr.simulation sets, each time
        if not self.verbose:
            logging.getLogger("flwr").setLevel(logging.ERROR)
            os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"

    def __exit__(self, *exc: Any) -> None:
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)
        os.environ.clear()
        os.environ.update(self.environment)


def centralised(settings: FleetSettings, data: Path, run_dir: Path, epochs: int) -> dict[str, Any]:
    """A centralised run on the union of the devices' data for ``epochs`` epochs (the baseline the
    federation is compared with): its summary."""
    from edgeft.data.examples import DataOptions
    from edgeft.training.loop import TrainConfig, train

    config = TrainConfig(epochs=epochs, batch_size=settings.batch_size, lr=settings.lr,
                         weight_decay=settings.weight_decay, seed=settings.seed)
    return train(Path(settings.artifacts), DataOptions(train=Path(data), val=Path(settings.val),
                                                       text_column=settings.text_column,
                                                       label_column=settings.label_column),
                 run_dir, config, threads=settings.threads or None, force=settings.force, backend="portable")


def _plot(history: list[dict[str, Any]], central: dict[str, Any] | None, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    rounds = [entry["round"] for entry in history if entry.get("val")]
    values = [entry["val"][metric] for entry in history if entry.get("val")]
    axis.plot(rounds, values, marker="o", label="federated (global model)")
    if central and central.get("after"):
        axis.axhline(central["after"][metric], color="grey", linestyle="--",
                     label=f"centralised, union of the devices' data ({central['after'][metric]:.3f})")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("round")
    axis.set_ylabel(f"validation {metric}")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
