"""Evaluation metrics from model outputs, computed with numpy only.

Classification: accuracy, macro-F1 and the confusion matrix; multi-label: exact-match accuracy
and micro/macro F1 at a 0.5 probability threshold; regression: MAE and RMSE; embedding:
retrieval within the set (recall@1/5/10, MRR) and the contrastive loss over the whole set.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeft.tasks import TEMPERATURE

# what "better" means for each metric early stopping can watch
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "micro_f1": True, "loss": False, "mae": False, "rmse": False,
                    "recall@1": True, "recall@5": True, "recall@10": True, "mrr": True}
RECALL_AT = (1, 5, 10)


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


def contrastive_loss(embeddings: np.ndarray, groups: np.ndarray, temperature: float = TEMPERATURE) -> float:
    """The embedding task's training loss (see ``edgeft.exporting.losses.add_contrastive``) with the
    whole set as one batch: a validation loss that does not depend on how batches are cut."""
    x = embeddings.astype(np.float64)
    scaled = (x @ x.T - 1.0) / temperature
    others = ~np.eye(len(x), dtype=bool)
    positive = (groups[:, None] == groups[None, :]) & others
    has = positive.any(axis=1)
    if not has.any():
        return 0.0
    exp = np.exp(scaled)
    den, num = (exp * others).sum(axis=1)[has], (exp * positive).sum(axis=1)[has]
    return float(np.mean(np.log(den) - np.log(num)))


def retrieval(embeddings: np.ndarray, groups: np.ndarray, temperature: float = TEMPERATURE) -> dict[str, Any]:
    """Each example as a query against all the others (leave one out), by cosine similarity: the
    share of queries with a member of their group among the k nearest (recall@k), the mean
    reciprocal rank of the first one (MRR), and the contrastive loss. Queries whose group has no
    other member are left out (``queries`` says how many count)."""
    x = embeddings.astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.maximum(norms, 1e-12)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    queries = np.flatnonzero(same.any(axis=1))
    result: dict[str, Any] = {"loss": contrastive_loss(x, groups, temperature)}
    if not len(queries):
        return {**result, **{f"recall@{k}": 0.0 for k in RECALL_AT}, "mrr": 0.0, "queries": 0}
    # rank of the first positive: how many candidates score strictly higher than the best positive
    best = np.where(same[queries], similarity[queries], -np.inf).max(axis=1)
    rank = (similarity[queries] > best[:, None]).sum(axis=1) + 1
    result.update({f"recall@{k}": float((rank <= k).mean()) for k in RECALL_AT})
    result.update({"mrr": float((1.0 / rank).mean()), "queries": int(len(queries))})
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
