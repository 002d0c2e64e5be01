"""A federation's settings: one typed record, read from Flower's run config or given in Python.

Flower passes settings to its apps as a flat ``run_config`` of strings, numbers and booleans
(``[tool.flwr.app.config]`` in the app's pyproject.toml, overridden by ``flwr run --run-config``),
with kebab-case keys by convention; :meth:`FleetSettings.from_run_config` turns that into this
record and refuses unknown keys and impossible values in edgeft's error style, and
:meth:`FleetSettings.run_config` goes the other way (the simulation and the app folder writer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from edgeft.errors import EdgeftError
from edgeft.fleet.local import LocalSettings
from edgeft.fleet.payload import ENCODINGS

# Flower's legacy strategies that aggregate full tensors; FedProx is left out on purpose: its
# proximal term belongs in each device's loss, which an exported training graph does not have
# (L2-SP, pulling towards the pretrained weights, is the closest edgeft offers).
STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedmedian", "fedtrimmedavg", "krum")


@dataclass(frozen=True)
class FleetSettings:
    artifacts: str = ""  # the artifact folder or device package (server: always; devices: when node-config has none)
    val: str = ""  # held-out data the server evaluates each round on
    run_dir: str = "artifacts/runs/fleet"
    rounds: int = 3
    fraction_train: float = 1.0  # share of the connected devices asked to train each round
    min_train_clients: int = 2  # a round needs this many devices to reply (below the total: tolerates drop-outs)
    min_available_clients: int = 2
    local_epochs: int = 1
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    strategy: str = "fedavg"
    server_lr: float = 0.1  # fedadam / fedyogi / fedadagrad / fedavgm
    encoding: str = "fp32"  # what devices send: fp32 tensors, fp16 or int8 updates
    secagg: bool = False  # SecAgg+: the server only learns the sum of the updates
    secagg_shares: int = 3
    secagg_threshold: int = 2
    dp_noise: float = 0.0  # client-side fixed clipping with Gaussian noise on the aggregate (0: off)
    dp_clip: float = 1.0
    dp_delta: float = 1e-5  # the delta the privacy budget (epsilon) is reported at
    round_timeout: float = 600.0
    seed: int = 0
    threads: int = 0  # compute threads per device (0: ONNX Runtime's choice)
    partitions: str = ""  # simulation: the folder of per-device data files (device-NNNN.jsonl)
    text_column: str = "text"
    label_column: str = "label"
    force: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            hint = "FedProx needs a proximal term in each device's loss, which exported graphs lack; " \
                   "use fedavg (with --l2sp artifacts against drift) or " if self.strategy == "fedprox" else "use "
            raise EdgeftError(f"Unknown strategy {self.strategy!r}.", where="strategy",
                              hint=f"{hint}one of {', '.join(STRATEGIES)}.")
        if self.encoding not in ENCODINGS:
            raise EdgeftError(f"Unknown update encoding {self.encoding!r}.", where="encoding",
                              hint=f"use one of {', '.join(ENCODINGS)}.")
        if self.encoding != "fp32" and (self.secagg or self.dp_noise):
            raise EdgeftError(f"{self.encoding} updates cannot be combined with "
                              f"{'secure aggregation' if self.secagg else 'differential privacy'}.", where="encoding",
                              hint="both work on the tensors themselves: send fp32 (the default) with them.")
        for name in ("rounds", "min_train_clients", "min_available_clients", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise EdgeftError(f"{name.replace('_', '-')} is {getattr(self, name)}.", where=name.replace("_", "-"),
                                  hint="give a whole number >= 1.")
        if not 0 < self.fraction_train <= 1:
            raise EdgeftError(f"fraction-train is {self.fraction_train}.", where="fraction-train",
                              hint="give a share in (0, 1].")
        if not 0 < self.dp_delta < 1:
            raise EdgeftError(f"dp-delta is {self.dp_delta}.", where="dp-delta", hint="give a probability in (0, 1).")
        if self.dp_noise < 0 or self.dp_clip <= 0:
            raise EdgeftError("dp-noise must be >= 0 and dp-clip > 0.", where="dp-noise", hint="e.g. 0.5 and 1.0.")

    @classmethod
    def from_run_config(cls, config: dict[str, Any], **overrides: Any) -> FleetSettings:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in {**config, **{k.replace("_", "-"): v for k, v in overrides.items()}}.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise EdgeftError(f"Unknown fleet setting {key!r}.", where="run config",
                                  hint=f"use {', '.join(k.replace('_', '-') for k in fields)}.")
            kind = type(fields[name].default)
            try:
                values[name] = kind(value) if kind is not bool or isinstance(value, bool) else \
                    str(value).lower() in ("1", "true", "yes")
            except (TypeError, ValueError) as exc:
                raise EdgeftError(f"The fleet setting {key} is {value!r}, not a {kind.__name__}.",
                                  where="run config", hint=f"give a {kind.__name__}.") from exc
        return cls(**values)

    def run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    def local(self) -> LocalSettings:
        return LocalSettings(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr,
                             weight_decay=self.weight_decay, threads=self.threads or None,
                             text_column=self.text_column, label_column=self.label_column)
