"""Losses and what they imply: the task, and the dtype and shape of the labels tensor.

Shared by export (which builds the loss into the training graph) and the device side (which
must feed labels of the right kind), so both agree from one table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossInfo:
    """A loss edgeft can build, and the labels it expects."""

    name: str
    task: str  # "classification", "multi-label", "regression" or "embedding"
    label_dtype: str
    per_output_labels: bool  # labels have shape [batch, outputs] rather than [batch]
    description: str


LOSSES: dict[str, LossInfo] = {
    "cross-entropy": LossInfo("cross-entropy", "classification", "int64", False,
                              "single-label classification (softmax cross-entropy)"),
    "bce": LossInfo("bce", "multi-label", "float32", True,
                    "multi-label classification (sigmoid binary cross-entropy with logits)"),
    "mse": LossInfo("mse", "regression", "float32", True, "regression (mean squared error)"),
    "l1": LossInfo("l1", "regression", "float32", True, "regression (mean absolute error)"),
    "contrastive": LossInfo("contrastive", "embedding", "int64", False,
                            "sentence embedding (multiple-negatives ranking: in-batch negatives, temperature "
                            "0.05); labels are groups of texts that belong together"),
}

TASKS = ("classification", "multi-label", "regression", "embedding")
DEFAULT_LOSS = {"classification": "cross-entropy", "multi-label": "bce", "regression": "mse", "embedding": "contrastive"}

# The contrastive loss's temperature: similarities are cosines divided by it (sentence-transformers'
# MultipleNegativesRankingLoss uses scale 20, i.e. 0.05, and few users ever change it).
TEMPERATURE = 0.05

OPTIMIZERS: dict[str, str] = {
    "adamw": "AdamW with decoupled weight decay",
    "sgd": "plain stochastic gradient descent",
}


def label_input(loss: str, num_outputs: int) -> dict[str, object]:
    """The labels tensor ``loss`` takes: name, dtype and shape ("batch" is the dynamic batch axis)."""
    shape = ["batch", num_outputs] if LOSSES[loss].per_output_labels else ["batch"]
    return {"name": "labels", "dtype": LOSSES[loss].label_dtype, "shape": shape}
