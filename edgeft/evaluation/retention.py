"""Knowledge retention: how far fine-tuning moved a model's outputs on text unrelated to the task.

Fine-tuning on a few hundred examples can pull a pretrained model away from what it knew, and
held-out accuracy on the task does not show it: the task's own data is where the model improved.
So ``edgeft evaluate --reference FILE`` runs the exported (pretrained) model and the fine-tuned
one over texts the user keeps for this (anything the model should still handle as before) and
reports how much their outputs differ. For embeddings that is the general quality kept: the
cosine similarity of each text's two embeddings, and whether the reference texts still relate to
each other as before (the correlation of their pairwise similarities, the nearest neighbour
kept). For classifiers: how often the top label is unchanged and how far the probabilities moved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeft.evaluation.metrics import normalised, scores


def embedding_retention(original: np.ndarray, tuned: np.ndarray) -> dict[str, Any]:
    """Per-text cosine similarity of the two embeddings (mean and minimum), the Pearson correlation
    of the texts' pairwise similarities before and after, and the share of texts whose nearest
    other reference text is unchanged."""
    a, b = normalised(original), normalised(tuned)
    cosine = (a * b).sum(axis=1)
    result: dict[str, Any] = {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min())}
    if len(a) >= 3:
        before, after = a @ a.T, b @ b.T
        upper = np.triu_indices(len(a), 1)
        result["similarity_correlation"] = float(np.corrcoef(before[upper], after[upper])[0, 1])
        np.fill_diagonal(before, -np.inf)
        np.fill_diagonal(after, -np.inf)
        result["neighbour_kept"] = float((before.argmax(axis=1) == after.argmax(axis=1)).mean())
    return result


def retention(task: str, original: np.ndarray, tuned: np.ndarray) -> dict[str, Any]:
    """How far ``tuned`` moved from ``original`` (the same reference texts, in order; see the
    module docstring): ``texts`` and the task's measures."""
    result: dict[str, Any] = {"texts": int(len(original))}
    if task == "embedding":
        return {**result, **embedding_retention(original, tuned)}
    if task == "regression":
        change = np.abs(tuned.astype(np.float64) - original)
        spread = float(original.std()) or 1.0
        return {**result, "mean_abs_change": float(change.mean()), "relative_change": float(change.mean() / spread)}
    p, q = scores(task, original), scores(task, tuned)
    if task == "classification":
        agreement = float((p.argmax(axis=1) == q.argmax(axis=1)).mean())
        distance = float(0.5 * np.abs(p - q).sum(axis=1).mean())  # total variation, 0..1
        return {**result, "top_label_kept": agreement, "probability_shift": distance}
    return {**result, "labels_kept": float(((p > 0.5) == (q > 0.5)).all(axis=1).mean()),
            "probability_shift": float(np.abs(p - q).mean())}
