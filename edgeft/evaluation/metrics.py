"""Evaluation metrics from model outputs, computed with numpy only.

Classification: accuracy, macro-F1 and the confusion matrix; multi-label: exact-match accuracy
and micro/macro F1 at a 0.5 probability threshold; regression: MAE and RMSE; embedding:
retrieval within the set (recall@1/5/10, MRR) and the contrastive loss over the whole set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeft.errors import EdgeftError
from edgeft.tasks import TEMPERATURE

# what "better" means for each metric early stopping can watch
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "micro_f1": True, "loss": False, "mae": False, "rmse": False,
                    "recall@1": True, "recall@5": True, "recall@10": True, "mrr": True}
RECALL_AT = (1, 5, 10)
BLOCK = 1024  # query rows at a time: an N x N similarity matrix of a 10,000-text set would take 800 MB


def task_metrics(task: str) -> tuple[str, ...]:
    """The metrics a ``task`` model reports, which early stopping and the best checkpoint can follow."""
    return {"classification": ("accuracy", "macro_f1", "loss"),
            "multi-label": ("micro_f1", "macro_f1", "accuracy", "loss"),
            "embedding": ("recall@1", "recall@5", "recall@10", "mrr", "loss")}.get(task, ("rmse", "mae", "loss"))


def require_queries(groups: np.ndarray, subject: str, where: str) -> None:
    """Refuse a set in which no example has another of its group (``subject`` names its texts):
    its retrieval metrics would read 0 whatever the model, and a guard on them accepts anything."""
    _, counts = np.unique(np.asarray(groups), return_counts=True)
    if not (counts > 1).any():
        raise EdgeftError(f"No {subject} has another of its group to be found by, so retrieval cannot be measured.",
                          where=where, hint="give texts in groups of two or more (the label column), or "
                                            "(text, positive) pairs.")


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


def scores(task: str, outputs: np.ndarray) -> np.ndarray:
    """Probabilities for classification (softmax) and multi-label (sigmoid); values for regression
    and embeddings."""
    x = outputs.astype(np.float64)
    if task == "classification":
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if task == "multi-label":
        return 1.0 / (1.0 + np.exp(-x))
    return x


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (float64): cosine similarities are then dot products."""
    x = np.asarray(embeddings, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _blocks(count: int):
    return (np.arange(start, min(start + BLOCK, count)) for start in range(0, count, BLOCK))


def contrastive_loss(embeddings: np.ndarray, groups: np.ndarray, temperature: float = TEMPERATURE) -> float:
    """The embedding task's training loss (see ``edgeft.exporting.losses.add_contrastive``) with the
    whole set as one batch: a validation loss that does not depend on how batches are cut."""
    x, groups = np.asarray(embeddings, np.float64), np.asarray(groups)
    total, counted = 0.0, 0
    for rows in _blocks(len(x)):
        exp = np.exp((x[rows] @ x.T - 1.0) / temperature)
        others = np.ones_like(exp, dtype=bool)
        others[np.arange(len(rows)), rows] = False
        positive = (groups[rows, None] == groups[None, :]) & others
        has = positive.any(axis=1)
        total += float((np.log((exp * others).sum(axis=1)[has]) - np.log((exp * positive).sum(axis=1)[has])).sum())
        counted += int(has.sum())
    return total / counted if counted else 0.0


def retrieval(embeddings: np.ndarray, groups: np.ndarray, temperature: float = TEMPERATURE) -> dict[str, Any]:
    """Each example as a query against all the others (leave one out), by cosine similarity: the
    share of queries with a member of their group among the k nearest (recall@k), the mean
    reciprocal rank of the first one (MRR), and the contrastive loss. Queries whose group has no
    other member are left out (``queries`` says how many count). Computed a block of queries at a
    time, so memory grows with the set, not with its square."""
    groups = np.asarray(groups)
    x = normalised(embeddings) if len(embeddings) else np.zeros((0, 1))
    ranks = []
    for rows in _blocks(len(x)):
        similarity = x[rows] @ x.T
        similarity[np.arange(len(rows)), rows] = -np.inf
        same = groups[rows, None] == groups[None, :]
        same[np.arange(len(rows)), rows] = False
        asked = same.any(axis=1)
        # rank of the first positive: how many candidates score strictly higher than the best positive
        best = np.where(same[asked], similarity[asked], -np.inf).max(axis=1, initial=-np.inf)
        ranks.append((similarity[asked] > best[:, None]).sum(axis=1) + 1)
    rank = np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)
    result: dict[str, Any] = {"loss": contrastive_loss(x, groups, temperature)}
    if not len(rank):
        return {**result, **{f"recall@{k}": 0.0 for k in RECALL_AT}, "mrr": 0.0, "queries": 0}
    result.update({f"recall@{k}": float((rank <= k).mean()) for k in RECALL_AT})
    result.update({"mrr": float((1.0 / rank).mean()), "queries": int(len(rank))})
    return result


def compute(task: str, outputs: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, Any]:
    """The metrics that fit ``task`` (from the manifest)."""
    if task == "embedding":
        return retrieval(outputs, labels)
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
    return {"classification": "accuracy", "multi-label": "micro_f1", "embedding": "recall@1"}.get(task, "rmse")
