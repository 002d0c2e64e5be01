"""Does a quantized frozen prefix keep what the task needs? A linear probe on labelled examples says.

A device package ships the frozen part quantized, and the tail then trains on what that prefix
computes. Whether a quantized prefix is good enough is a question about its features, asked
before any tail exists: features are pooled per example, ridge-regression probes (closed form,
deterministic, numpy only, strength by generalized cross-validation) are fitted on the fp32
prefix's features by k-fold cross-validation, and the task's own metrics score them, every guard
example once, out of fold, on the fp32 features and on each candidate's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeft.data.batching import sequential_batches
from edgeft.evaluation import metrics

FOLDS = 5


def pooled_features(session: Any, examples: Any, boundary: list[dict[str, Any]], batch_size: int = 32) -> np.ndarray:
    """One feature vector per example from the prefix's outputs: tensors with a sequence axis are
    averaged over the example's own tokens, spatial maps over their positions, then all are joined."""
    wanted = [i.name for i in session.get_inputs()]
    order = np.argsort(examples.lengths, kind="stable")
    rows: list[np.ndarray] = [np.empty(0)] * len(order)
    for chunk in sequential_batches(len(order), batch_size):
        indices = order[chunk]
        inputs = examples.inputs(indices)
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, {n: inputs[n] for n in wanted})))
        parts = []
        for spec in boundary:
            value = values[spec["name"]].astype(np.float64)
            if len(spec["shape"]) > 1 and spec["shape"][1] == "sequence":
                lengths = examples.lengths[indices]
                mask = (np.arange(value.shape[1])[None, :] < lengths[:, None]).astype(np.float64)
                value = (value * mask.reshape(*mask.shape, *([1] * (value.ndim - 2)))).sum(axis=1)
                value /= np.maximum(lengths, 1).reshape(-1, *([1] * (value.ndim - 1)))
            if value.ndim > 2:
                value = value.mean(axis=tuple(range(2, value.ndim)))
            parts.append(value.reshape(len(indices), -1))
        joined = np.concatenate(parts, axis=1)
        for row, index in enumerate(indices):
            rows[index] = joined[row]
    return np.stack(rows) if rows else np.zeros((0, 0))


def _targets(task: str, labels: np.ndarray, num_labels: int) -> np.ndarray:
    if task == "classification":
        return np.eye(num_labels)[labels]
    return labels.reshape(len(labels), -1).astype(np.float64)


def _design(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.hstack([(x - mean) / std, np.ones((len(x), 1))])


def choose_ridge(x: np.ndarray, y: np.ndarray) -> float:
    """The ridge strength with the least generalized cross-validation error (Golub, Heath and Wahba,
    1979) on standardized features: computed from one SVD, so the probe needs no tuning by hand."""
    std = x.std(axis=0)
    a = _design(x, x.mean(axis=0), np.where(std > 1e-8, std, 1.0))
    u, singular, _ = np.linalg.svd(a, full_matrices=False)
    projected = u.T @ y
    outside = (y ** 2).sum() - (projected ** 2).sum()  # the part of y no ridge fit can reach
    best, best_score = 1.0, np.inf
    for strength in len(x) * np.logspace(-4, 1, 21):
        shrink = strength / (singular ** 2 + strength)  # (I - H) along each singular direction
        residual = outside + ((shrink[:, None] * projected) ** 2).sum()
        score = len(x) * residual / (len(x) - (1 - shrink).sum()) ** 2
        if score < best_score:
            best, best_score = float(strength), score
    return best


class Probe:
    """A ridge probe fitted on the reference (fp32) features, one per cross-validation fold.

    ``metrics(features)`` predicts every example with the fold probe that did not see it, from
    ``features`` of the same examples: the reference's own features give the reference score, a
    candidate's give the score the same probes reach on what the candidate computes. Both are
    judged by the same probes, as deploy's guard judges one model at two precisions, so only the
    candidate's changes move the score.
    """

    def __init__(self, task: str, features: np.ndarray, labels: np.ndarray, num_labels: int,
                 folds: int = FOLDS, seed: int = 0) -> None:
        self.task, self.labels, self.num_labels = task, labels, num_labels
        self.fits = []
        if task == "embedding":  # no probe to fit: retrieval on the features themselves is the measure
            self.strength = 0.0
            self.reference = self.metrics(features)
            return
        count = len(features)
        folds = max(2, min(folds, count // 2))
        self.assignment = np.random.default_rng(seed).permutation(count) % folds
        targets = _targets(task, labels, num_labels)
        self.strength = choose_ridge(features, targets)
        for fold in range(folds):
            train = features[self.assignment != fold]
            mean, std = train.mean(axis=0), train.std(axis=0)
            std = np.where(std > 1e-8, std, 1.0)
            a = _design(train, mean, std)
            y = targets[self.assignment != fold]
            if a.shape[1] <= a.shape[0]:  # primal: (A'A + rI) W = A'Y
                weights = np.linalg.solve(a.T @ a + self.strength * np.eye(a.shape[1]), a.T @ y)
            else:  # dual, for more features than examples: W = A'(AA' + rI)^-1 Y
                weights = a.T @ np.linalg.solve(a @ a.T + self.strength * np.eye(a.shape[0]), y)
            self.fits.append((mean, std, weights))
        self.reference = self.metrics(features)

    def metrics(self, features: np.ndarray) -> dict[str, Any]:
        """The task's metrics of the fold probes on ``features`` (see the class docstring); for
        the embedding task, retrieval among the examples by the features' cosine similarity."""
        if self.task == "embedding":
            return metrics.retrieval(features, self.labels)
        predicted = np.zeros((len(features), self.fits[0][2].shape[1]))
        for fold, (mean, std, weights) in enumerate(self.fits):
            held = self.assignment == fold
            predicted[held] = _design(features[held], mean, std) @ weights
        if self.task == "multi-label":
            predicted = predicted - 0.5  # the metrics threshold logits at 0
        outputs = predicted if self.task != "regression" else predicted.reshape(self.labels.shape)
        found = metrics.compute(self.task, outputs, self.labels, self.num_labels)
        found.pop("confusion", None)
        return found
