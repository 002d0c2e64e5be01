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
    server_lr: float = 0.1  # fedadam / fedyogi / fedadagrad (eta); fedavgm's server learning rate
    server_momentum: float = 0.9  # fedavgm
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
        if self.dp_noise and self.strategy != "fedavg":
            raise EdgeftError(f"Differential privacy with {self.strategy} would report a privacy budget it does not "
                              "have.", where="strategy",
                              hint="use fedavg with --dp-noise: the noise is calibrated to an average of clipped "
                                   "updates (server optimisers keep a noise-free state; robust aggregators have "
                                   "another sensitivity).")
        if self.secagg and self.strategy in ("fedmedian", "fedtrimmedavg", "krum"):
            raise EdgeftError(f"{self.strategy} needs each device's tensors, which secure aggregation hides.",
                              where="strategy", hint="use fedavg (or a server optimiser) with --secagg.")
        if self.secagg and not 2 <= self.secagg_threshold <= self.secagg_shares:
            raise EdgeftError(f"SecAgg+ needs 2 <= threshold <= shares (threshold {self.secagg_threshold}, shares "
                              f"{self.secagg_shares}).", where="secagg-threshold", hint="e.g. shares 3, threshold 2.")
        for name in ("rounds", "min_train_clients", "min_available_clients", "local_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise EdgeftError(f"{name.replace('_', '-')} is {getattr(self, name)}.", where=name.replace("_", "-"),
                                  hint="give a whole number >= 1.")
        if self.min_train_clients > self.min_available_clients:
            raise EdgeftError(f"min-train-clients ({self.min_train_clients}) is more than min-available-clients "
                              f"({self.min_available_clients}): no round could ever have enough replies.",
                              where="min-train-clients", hint="give at most as many as must be connected.")
        for name in ("lr", "server_lr", "round_timeout"):
            if not getattr(self, name) > 0:
                raise EdgeftError(f"{name.replace('_', '-')} is {getattr(self, name)}.", where=name.replace("_", "-"),
                                  hint="give a number > 0.")
        if not 0 <= self.server_momentum < 1:
            raise EdgeftError(f"server-momentum is {self.server_momentum}.", where="server-momentum",
                              hint="give a number in [0, 1).")
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
            values[name] = _typed(key, value, type(fields[name].default))
        return cls(**values)

    def run_config(self) -> dict[str, Any]:
        """The settings as Flower's flat run config (kebab-case keys)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in dataclasses.fields(self)}

    def local(self) -> LocalSettings:
        return LocalSettings(epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr,
                             weight_decay=self.weight_decay, threads=self.threads or None,
                             text_column=self.text_column, label_column=self.label_column)


def _typed(key: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind``, exactly: no 2.5 taken for 2, no "ture" taken for false."""
    problem = EdgeftError(f"The fleet setting {key} is {value!r}, not {'an' if kind is int else 'a'} {kind.__name__}.",
                          where="run config",
                          hint=f"give a {'true or false' if kind is bool else kind.__name__}.")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise problem
    try:
        number = float(value) if kind in (int, float) and not isinstance(value, bool) else None
        if kind is int:
            if number is None or not number.is_integer():
                raise problem
            return int(number)
        return kind(value) if kind is not float else number
    except (TypeError, ValueError) as exc:
        raise problem from exc
