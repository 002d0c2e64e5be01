"""Running an inference model with plain onnxruntime: sessions, losses, and bundle loading.

Used by deploy (to evaluate fp32 against quantized), by ``predict`` and by ``bench``: the
device needs nothing but onnxruntime, numpy and tokenizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeft.manifest import Manifest

def session_config(mode: str) -> dict[str, str]:
    """The session config a model quantized with recipe ``mode`` needs to run as intended.

    Weight-only models store int8 weights behind DequantizeLinear nodes, which ONNX Runtime
    keeps (to preserve QDQ patterns) and so runs on every inference; turning its QDQ handling off
    lets constant folding dequantize them once, when the session loads.
    """
    return {"session.disable_quant_qdq": "1"} if mode == "weight-only" else {}


def make_session(path: Path, threads: int | None = None, optimization: str = "all",
                 config: dict[str, str] | None = None):  # -> ort.InferenceSession
    """An InferenceSession on the CPU with a fixed thread count, graph optimization level and
    session config entries (``session_config``)."""
    import onnxruntime as ort

    from edgeft.ortcompat import quiet_runtime, session_log_severity, session_options

    quiet_runtime()
    options = session_options(threads, optimization, config)
    options.log_severity_level = session_log_severity()
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def loss_value(task: str, outputs: np.ndarray, labels: np.ndarray, loss: str) -> float:
    """The training loss recomputed in numpy (so inference models report it too)."""
    x = outputs.astype(np.float64)
    if loss == "contrastive":
        from edgeft.evaluation.metrics import contrastive_loss

        return contrastive_loss(x, labels)
    if loss == "cross-entropy":
        shifted = x - x.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(labels)), labels].mean())
    if loss == "bce":
        return float(np.mean(np.maximum(x, 0) - x * labels + np.log1p(np.exp(-np.abs(x)))))
    if loss == "l1":
        return float(np.mean(np.abs(x - labels)))
    return float(np.mean((x - labels) ** 2))


class InferenceStepper:
    """Gives an InferenceSession the ``eval_step`` of a trainer, for edgeft.evaluation.evaluate."""

    def __init__(self, session: Any, manifest: Manifest) -> None:
        self.session = session
        self.names = [i.name for i in session.get_inputs()]
        self.output = manifest.data["output"]["name"]
        self.task = manifest.data["task"]
        self.loss = manifest.data["loss"]

    def eval_step(self, batch: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
        outputs = self.session.run([self.output], {n: batch[n] for n in self.names})[0]
        return loss_value(self.task, outputs, batch["labels"], self.loss), outputs

