"""Evaluation metrics from model outputs, computed with numpy only.

Classification: accuracy, macro-F1 and the confusion matrix; multi-label: exact-match accuracy
and micro/macro F1 at a 0.5 probability threshold; regression: MAE and RMSE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# what "better" means for each metric early stopping can watch
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "micro_f1": True, "loss": False, "mae": False, "rmse": False}


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def classification(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1 over the classes present in labels or predictions, and the confusion matrix."""
    predicted = np.argmax(logits, axis=1)
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
    f1 = _f1(tp, fp, fn)
    return {"accuracy": float((predicted == labels).mean()) if len(labels) else 0.0,
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "confusion": confusion.tolist()}


def multilabel(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Exact-match accuracy and micro / macro F1 with sigmoid(logit) > 0.5."""
    predicted = logits > 0.0
    truth = labels > 0.5
    tp = (predicted & truth).sum(axis=0).astype(np.float64)
    fp = (predicted & ~truth).sum(axis=0).astype(np.float64)
    fn = (~predicted & truth).sum(axis=0).astype(np.float64)
    return {"accuracy": float((predicted == truth).all(axis=1).mean()),
            "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
            "macro_f1": float(_f1(tp, fp, fn).mean())}


def regression(predictions: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Mean absolute error and root mean squared error over every output."""
    error = predictions.astype(np.float64) - targets
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean()))}


def compute(task: str, outputs: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, Any]:
    """The metrics that fit ``task`` (from the manifest)."""
    if task == "classification":
        return classification(outputs, labels, num_labels)
    if task == "multi-label":
        return multilabel(outputs, labels)
    return regression(outputs, labels)


def better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (None: nothing yet): the best checkpoint's rule."""
    if best is None:
        return True
    return value > best if HIGHER_IS_BETTER.get(metric, False) else value < best


def default_metric(task: str) -> str:
    """The metric early stopping and the best checkpoint follow unless told otherwise."""
    return {"classification": "accuracy", "multi-label": "micro_f1"}.get(task, "rmse")
