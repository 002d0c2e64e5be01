"""Flower's ClientApp on edgeft: a device trains its package on local data, sends the tail only.

Each round the server sends the global trainable tensors and the round's settings (local epochs,
batch size, learning rate, update encoding); the device fine-tunes from them with the portable
backend (onnxruntime and numpy: no torch on the device) and replies with its tensors or their
encoded update and its example count. Where the device's files are comes from the SuperNode's
``--node-config``: ``data`` (its local data file) and ``artifacts`` (its artifact folder or
device package; default: the run config's). In a simulation each virtual device is a
``partition-id`` and reads its ``DEVICE_FILE`` from the run config's ``partitions`` folder.

SecAgg+ and client-side clipping are Flower's own mods, applied only to rounds whose server
asks for them (Flower's mods fail on a round that does not), so one ClientApp serves every
federation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.app.message_type import MessageType
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from edgeft.errors import EdgeftError
from edgeft.fleet import payload
from edgeft.fleet.local import LocalSettings, local_update
from edgeft.fleet.partition import DEVICE_FILE


class EdgeftClient(NumPyClient):
    """One device: its artifacts and its local data file (``device``: its number, for its seed)."""

    def __init__(self, artifacts: Path, data: Path, threads: int | None = None, device: int = 0) -> None:
        self.artifacts, self.data, self.threads, self.device = Path(artifacts), Path(data), threads, device

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        settings = LocalSettings(epochs=int(config["local-epochs"]), batch_size=int(config["batch-size"]),
                                 lr=float(config["lr"]), weight_decay=float(config["weight-decay"]),
                                 threads=self.threads, text_column=str(config["text-column"]),
                                 label_column=str(config["label-column"]))
        # each device shuffles (and drops out) its own way, each round anew, repeatably
        seed = int(np.random.SeedSequence([int(config["seed"]), int(config["round"]), self.device]).generate_state(1)[0])
        trained, examples, metrics = local_update(self.artifacts, self.data, parameters, settings, seed,
                                                  fingerprint=str(config.get("tensors", "")))
        sent = payload.encode(trained, parameters, str(config["encoding"]))
        metrics["bytes_sent"] = payload.nbytes(sent)
        # with DP every device weighs the same: the noise is calibrated to one clipped update in the average
        return sent, 1 if config.get("uniform") else examples, {k: v for k, v in metrics.items() if v is not None}


def _node_files(context: Context, defaults: dict[str, Any]) -> tuple[Path, Path]:
    node, run = context.node_config, {**defaults, **context.run_config}
    artifacts = node.get("artifacts") or run.get("artifacts")
    if "data" in node:
        data = Path(str(node["data"]))
    elif "partition-id" in node and run.get("partitions"):
        data = Path(str(run["partitions"])) / DEVICE_FILE.format(int(node["partition-id"]))
    else:
        raise EdgeftError("This SuperNode has no local data.", where="--node-config",
                          hint="start it with --node-config \"data='/path/to/local.csv'\" (and artifacts='...').")
    if not artifacts:
        raise EdgeftError("This SuperNode has no artifacts to train.", where="--node-config",
                          hint="add artifacts='/path/to/package' to its --node-config (or to the run config).")
    return Path(str(artifacts)), data


def _client_fn(defaults: dict[str, Any]) -> Any:
    def client_fn(context: Context) -> Any:
        artifacts, data = _node_files(context, defaults)
        threads = int({**defaults, **context.run_config}.get("threads", 0) or 0) or None
        device = int(context.node_config.get("partition-id", context.node_id % 2**31))
        return EdgeftClient(artifacts, data, threads, device).to_client()
    return client_fn


def _secagg_round(msg: Message) -> bool:
    return msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS in msg.content.config_records


def _clipped_round(msg: Message) -> bool:
    if msg.metadata.message_type != MessageType.TRAIN:
        return False
    return any(KEY_CLIPPING_NORM in record for record in msg.content.config_records.values())


def _only_when(applies: Any, mod: Any) -> Any:
    """``mod`` for the messages ``applies`` accepts; the others pass straight through."""
    def conditional(msg: Message, context: Context, call_next: Any) -> Message:
        return mod(msg, context, call_next) if applies(msg) else call_next(msg, context)
    conditional.__name__ = f"{mod.__name__}_when_asked"
    return conditional


def make_client_app(defaults: dict[str, Any] | None = None) -> ClientApp:
    """The ClientApp; ``defaults``: run-config values for when Flower gives none (a simulation
    started from Python has no pyproject.toml to take them from)."""
    return ClientApp(client_fn=_client_fn(dict(defaults or {})), mods=[_only_when(_secagg_round, secaggplus_mod),
                                                _only_when(_clipped_round, fixedclipping_mod)])


app = make_client_app()
