"""Flower's ServerApp on edgeft: start from the exported tail, aggregate, evaluate, keep the best.

Round 0 sends the artifacts' exported trainable values; each round a share of the devices
fine-tunes from the global tensors (see :mod:`edgeft.fleet.client_app`) and a Flower strategy
combines what they send (FedAvg by default; FedAvgM, FedAdam, FedYogi, FedAdagrad, FedMedian,
FedTrimmedAvg, Krum). After every round the server evaluates the global tensors on its held-out
data; at the end it writes an edgeft run folder with the best round as ``best/`` (see
:mod:`edgeft.fleet.global_model`), which ``edgeft deploy`` takes.

Options, all Flower's own machinery: SecAgg+ (``secagg``: Flower's SecAggPlusWorkflow, so the
server sees only the sum of the devices' tensors), client-side clipping with Gaussian noise on
the aggregate (``dp-noise``, ``dp-clip``: Flower's DifferentialPrivacyClientSideFixedClipping),
and compressed updates (``encoding`` fp16 / int8, decoded here before the strategy aggregates).
The federation is Flower's legacy strategy API driven by its DefaultWorkflow, because SecAgg+
exists only there in Flower 1.42.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.common import FitIns, FitRes, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (DifferentialPrivacyClientSideFixedClipping, FedAdagrad, FedAdam, FedAvg, FedAvgM,
                                  FedMedian, FedTrimmedAvg, FedYogi, Krum, Strategy)
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from edgeft.errors import EdgeftError
from edgeft.evaluation import metrics
from edgeft.fleet import payload
from edgeft.fleet.global_model import GlobalModel
from edgeft.fleet.settings import FleetSettings
from edgeft.outputs import check_output

_STRATEGIES: dict[str, Any] = {"fedavg": FedAvg, "fedavgm": FedAvgM, "fedadam": FedAdam, "fedyogi": FedYogi,
                               "fedadagrad": FedAdagrad, "fedmedian": FedMedian, "fedtrimmedavg": FedTrimmedAvg,
                               "krum": Krum}


class Recorder:
    """Per-round history: the global model's validation metrics, what the devices reported, time."""

    def __init__(self, model: GlobalModel, private: bool = False) -> None:
        self.model = model
        self.private = private  # SecAgg+ or DP: no per-device statistics are kept
        self.history: list[dict[str, Any]] = []
        self.best: list[np.ndarray] | None = None
        self.best_round: int | None = None
        self.best_value: float | None = None
        self.final: list[np.ndarray] | None = None
        self.round = 0  # the round being aggregated (Flower's metrics hook is not told)
        self._fit: dict[int, dict[str, Any]] = {}
        self._clock = time.perf_counter()

    def evaluate(self, server_round: int, tensors: list[np.ndarray], config: dict[str, Any]) -> tuple[float, dict]:
        """Flower's ``evaluate_fn``: called with the initial tensors (round 0), then after each round."""
        val = self.model.evaluate(tensors) or {}
        now = time.perf_counter()
        entry: dict[str, Any] = {"round": server_round, "val": val, **self._fit.pop(server_round, {}),
                                 "seconds": round(now - self._clock, 3)}
        self._clock = now
        self.history.append(entry)
        self.final = [np.array(t, copy=True) for t in tensors]
        value = val.get(self.model.metric)
        if value is not None and metrics.better(self.model.metric, float(value), self.best_value):
            self.best, self.best_round, self.best_value = self.final, server_round, float(value)
        return float(val.get("loss", 0.0)), {k: v for k, v in val.items() if isinstance(v, (int, float))}

    def note(self, server_round: int, **values: Any) -> None:
        self._fit.setdefault(server_round, {}).update(values)

    def fit_metrics(self, replies: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        """What the round's devices reported: their count, examples, mean loss and bytes sent
        (with SecAgg+ or DP only the count: the server is not to learn about single devices)."""
        record: dict[str, Any] = {"clients": len(replies)}
        if not self.private:
            losses = [(n, m["train_loss"]) for n, m in replies if "train_loss" in m]
            sent = [m["bytes_sent"] for _, m in replies if "bytes_sent" in m]
            record.update({
                "examples": sum(n for n, _ in replies),
                "train_loss": sum(n * v for n, v in losses) / max(sum(n for n, _ in losses), 1) if losses else None,
                "bytes_sent_per_client": int(np.mean(sent)) if sent else None,
                "device_seconds_max": max((m.get("train_seconds", 0.0) for _, m in replies), default=None)})
        self.note(self.round, **record)
        return {k: v for k, v in record.items() if v is not None}


class Watched(Strategy):
    """The outermost strategy: turns fp16 / int8 updates back into tensors, refuses non-finite
    ones (a diverged device would poison every later round), records failures, skips a round
    with fewer than ``min_replies`` replies, and stops the federation when nobody replied."""

    def __init__(self, inner: Strategy, encoding: str, recorder: Recorder, min_replies: int = 1) -> None:
        self.inner, self.encoding, self.recorder, self.min_replies = inner, encoding, recorder, min_replies
        self._start: list[np.ndarray] = []

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        self._start = parameters_to_ndarrays(parameters)
        asked = self.inner.configure_fit(server_round, parameters, client_manager)
        if not asked:
            self.recorder.note(server_round, clients=0, skipped="no device was available to train")
        return asked

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[Any]) -> tuple[Parameters | None, dict[str, Any]]:
        self.recorder.round = server_round
        decoded, failures = [], list(failures)
        for proxy, res in results:
            try:
                tensors = payload.decode(parameters_to_ndarrays(res.parameters), self._start, self.encoding)
            except ValueError as exc:  # arrays of another model (the devices check, but a reply may still be wrong)
                failures.append(EdgeftError(f"the device sent arrays that do not fit the model ({exc})"))
                continue
            if len(tensors) != len(self._start) or \
                    not all(np.isfinite(t).all() and t.shape == s.shape for t, s in zip(tensors, self._start)):
                failures.append(EdgeftError("the device sent infinite or NaN tensors (its training diverged), "
                                            "or tensors of another shape"))
                continue
            decoded.append((proxy, FitRes(res.status, ndarrays_to_parameters(tensors), res.num_examples,
                                          res.metrics)) if self.encoding != "fp32" else (proxy, res))
        self.recorder.note(server_round, failures=len(failures))
        if not decoded and failures:
            raise EdgeftError(f"Round {server_round}: none of the {len(failures)} devices asked to train replied.",
                              where="fleet", hint=f"the first failure: {_failure(failures[0])}")
        if len(decoded) < self.min_replies:
            self.recorder.note(server_round, clients=len(decoded),
                               skipped=f"{len(decoded)} replies, fewer than the {self.min_replies} a round needs")
            return None, {}
        aggregated, metrics = self.inner.aggregate_fit(server_round, decoded, failures)
        if aggregated is None:  # e.g. the DP wrapper discards a round that had failures
            self.recorder.note(server_round, clients=len(decoded), skipped="the strategy discarded the round")
        return aggregated, metrics

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[float | None, dict]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict] | None:
        return self.inner.evaluate(server_round, parameters)


def _failure(failure: Any) -> str:
    """A failed device's error, as Flower hands it over (an exception, or a reply with a status)."""
    if isinstance(failure, BaseException):
        text = str(failure)
        if "Message: " in text:  # Flower's ClientAppException around the device's own error (via Ray)
            text = text.split("Message: ", 1)[1].split("\n")[0]
        return " ".join(text.split())[:300] or type(failure).__name__
    _, res = failure
    return str(getattr(getattr(res, "status", None), "message", res))[:300]


def build_strategy(settings: FleetSettings, recorder: Recorder, initial: list[np.ndarray],
                   fingerprint: str) -> Strategy:
    def fit_config(server_round: int) -> dict[str, Any]:
        return {"round": server_round, "local-epochs": settings.local_epochs, "batch-size": settings.batch_size,
                "lr": settings.lr, "weight-decay": settings.weight_decay, "encoding": settings.encoding,
                "seed": settings.seed, "text-column": settings.text_column, "label-column": settings.label_column,
                "tensors": fingerprint, "uniform": bool(settings.dp_noise)}

    options: dict[str, Any] = dict(
        fraction_fit=settings.fraction_train, fraction_evaluate=0.0, min_fit_clients=settings.min_train_clients,
        min_available_clients=settings.min_available_clients, evaluate_fn=recorder.evaluate,
        on_fit_config_fn=fit_config, initial_parameters=ndarrays_to_parameters(initial),
        fit_metrics_aggregation_fn=recorder.fit_metrics, accept_failures=True)
    if settings.strategy in ("fedadam", "fedyogi", "fedadagrad"):
        options["eta"] = settings.server_lr
    elif settings.strategy == "fedavgm":
        options.update(server_learning_rate=settings.server_lr, server_momentum=settings.server_momentum)
    strategy: Strategy = _STRATEGIES[settings.strategy](**options)
    if settings.dp_noise:
        sampled = max(settings.min_train_clients, int(settings.min_available_clients * settings.fraction_train))
        strategy = DifferentialPrivacyClientSideFixedClipping(strategy, noise_multiplier=settings.dp_noise,
                                                              clipping_norm=settings.dp_clip,
                                                              num_sampled_clients=sampled)
    return Watched(strategy, settings.encoding, recorder, settings.min_train_clients)


def privacy_spent(settings: FleetSettings, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The privacy budget the rounds spent, by Flower's RDP accountant (Google's dp-accounting).

    As Flower's own fixed-clipping accounting does, each round with replies is one Gaussian
    release of the clipped updates' sum, without amplification by sampling (devices are not
    sampled by a Poisson process) and with add-or-remove-one neighbouring devices: a bound for
    a device's whole data, not per example.
    """
    try:
        from flwr.supercore.privacy_accounting import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig,
                                                       SamplingMethod)
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(PrivacyConfig(target_delta=settings.dp_delta,
                                                 population_size=settings.min_available_clients,
                                                 neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                                 sampling_method=SamplingMethod.NO_AMPLIFICATION))
    except ImportError:
        return {"epsilon": None, "note": "no privacy accountant: install dp-accounting (pip install 'flwr[dp]')"}
    for entry in history[1:]:
        if entry.get("clients"):
            accountant.compose(GaussianPrivacyEvent(noise_multiplier=settings.dp_noise, sample_size=entry["clients"],
                                                    population_size=max(entry["clients"],
                                                                        settings.min_available_clients)))
    if not accountant.num_releases:
        return {"epsilon": 0.0, "delta": settings.dp_delta, "releases": 0}
    spent = accountant.get_privacy_spent()
    return {"epsilon": round(spent.epsilon, 4), "delta": spent.delta, "releases": spent.num_releases,
            "accounting": spent.accounting_method}


class _TimedGrid:
    """Flower's Grid with a default timeout on ``send_and_receive``: its DefaultWorkflow waits
    for replies without one, so a device that is alive but stuck would hold a round forever."""

    def __init__(self, grid: Grid, timeout: float) -> None:
        self._grid, self._timeout = grid, timeout

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        return self._grid.send_and_receive(messages, timeout=self._timeout if timeout is None else timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def run_federation(grid: Grid, context: Context, settings: FleetSettings, summary: dict[str, Any] | None = None,
                   also: Callable[[Path, list[dict[str, Any]], dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``settings.rounds`` rounds on ``grid`` and write the run folder; its summary.

    ``summary``: more entries for the summary; ``also(folder, history, summary)``: writes more
    files into the run folder while it is staged (a simulation's partition record and plot)."""
    check_run_dir(settings)  # before any device works, not after the last round
    model = GlobalModel(settings.artifacts, settings.val or None, settings.text_column, settings.label_column,
                        settings.threads or None)
    try:
        recorder = Recorder(model, private=settings.secagg or bool(settings.dp_noise))
        initial = model.initial()
        strategy = build_strategy(settings, recorder, initial, model.fingerprint())
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=settings.rounds,
                                                                    round_timeout=settings.round_timeout),
                               strategy=strategy)
        fit_workflow = SecAggPlusWorkflow(num_shares=settings.secagg_shares,
                                          reconstruction_threshold=settings.secagg_threshold,
                                          timeout=settings.round_timeout) if settings.secagg else None
        DefaultWorkflow(fit_workflow=fit_workflow)(_TimedGrid(grid, settings.round_timeout), legacy)  # type: ignore[arg-type]
        updated = [e for e in recorder.history[1:] if e.get("clients") and not e.get("skipped")]
        if not updated:
            raise EdgeftError(f"No round of the {settings.rounds} updated the model "
                              f"({_first_skip(recorder.history)}).", where="fleet",
                              hint="connect more devices (or lower --min-train-clients), then run it again.")
        sent = [e["bytes_sent_per_client"] for e in recorder.history if e.get("bytes_sent_per_client")]
        extra = {"strategy": settings.strategy, "encoding": settings.encoding, "secagg": settings.secagg,
                 "dp": {"noise_multiplier": settings.dp_noise, "clipping_norm": settings.dp_clip,
                        **privacy_spent(settings, recorder.history)} if settings.dp_noise else None,
                 "rounds_skipped": len(recorder.history) - 1 - len(updated),
                 # with SecAgg+ or DP the devices report nothing: they send fp32 tensors (SecAgg+ masks them)
                 "bytes_per_client_per_round": {"sent": int(np.mean(sent)) if sent else payload.nbytes(initial),
                                                "received": payload.nbytes(initial)},
                 "seconds": round(sum(e["seconds"] for e in recorder.history), 3), **(summary or {})}
        return model.write_run(settings.run_dir, recorder.history, recorder.best, recorder.best_round,
                               recorder.final or initial, {**settings.run_config(), "force": False},
                               force=settings.force, extra=extra, also=also)
    finally:
        model.close()


def check_run_dir(settings: FleetSettings) -> None:
    check_output(Path(settings.run_dir), settings.force, "run", "--run-dir",
                 keep_hint="pass --force to replace it, or another --run-dir.")


def _first_skip(history: list[dict[str, Any]]) -> str:
    return next((f"round {e['round']}: {e['skipped']}" for e in history[1:] if e.get("skipped")),
                "no device replied")


def make_server_app(settings: FleetSettings | None = None, outcome: dict[str, Any] | None = None,
                    summary: dict[str, Any] | None = None, also: Any = None) -> ServerApp:
    """A ServerApp for ``settings`` (a simulation's), else for the run config Flower gives it.

    ``outcome`` receives the run's ``summary``, or the ``error`` that stopped it (Flower's
    simulation raises its own exception around it); ``summary`` and ``also``: see run_federation."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            done = run_federation(grid, context, settings or FleetSettings.from_run_config(dict(context.run_config)),
                                  summary, also)
        except BaseException as exc:
            if outcome is not None:
                outcome["error"] = exc
            raise
        if outcome is not None:
            outcome["summary"] = done

    return app


app = make_server_app()
