"""The accuracy guard: try recipes from the profile's towards safer ones until the drop fits.

Each step keeps everything the previous one changed: per-channel weight scales, then the
classifier head in fp32, then the embedding table in fp32, then weight-only int8 (fp32 compute),
and finally no quantization at all, which always fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from edgeft.devices import Quantization
from edgeft.selection import find_blocks, head_names


def head_node_patterns(trainable: list[str]) -> list[str]:
    """Node-name patterns of the head (the classifier), the layers most sensitive to quantization."""
    modules = {name.rpartition(".")[0] for name in head_names(trainable, find_blocks(trainable))}
    return sorted("^/" + module.replace(".", "/") + "/" for module in modules if module)


def ladder(recipe: Quantization, head_patterns: list[str]) -> Iterator[tuple[str, Quantization]]:
    """(why, recipe) pairs, the profile's own recipe first."""
    yield "the profile's recipe", recipe
    if recipe.mode in ("dynamic", "static") and not recipe.per_channel:
        recipe = recipe.model_copy(update=dict(per_channel=True))
        yield "per-channel weight scales", recipe
    if recipe.mode in ("dynamic", "static", "weight-only") and head_patterns:
        recipe = recipe.model_copy(update=dict(exclude_nodes=tuple(recipe.exclude_nodes) + tuple(head_patterns)))
        yield "classifier head kept in fp32", recipe
    if recipe.mode != "none" and recipe.quantize_embeddings:
        recipe = recipe.model_copy(update=dict(quantize_embeddings=False))
        yield "embedding table kept in fp32", recipe
    if recipe.mode in ("dynamic", "static") or (recipe.mode == "weight-only" and recipe.weight_type == "int4"):
        recipe = recipe.model_copy(update=dict(mode="weight-only", weight_type="int8"))
        yield "weight-only int8 (fp32 compute)", recipe
    if recipe.mode != "none":
        yield "no quantization (fp32)", recipe.model_copy(update=dict(mode="none"))


def guarded_metric(task: str) -> str:
    """The metric the guard compares: accuracy, RMSE (regression) or recall@1 (embedding: the share
    of queries whose nearest neighbour is of their group, which quantization noise flips first)."""
    return {"regression": "rmse", "embedding": "recall@1"}.get(task, "accuracy")


def quality_drop(task: str, reference: dict[str, Any], candidate: dict[str, Any]) -> float:
    """Accuracy (embedding: recall@1) lost in percentage points (regression: RMSE increase in percent)."""
    metric = guarded_metric(task)
    if task == "regression":
        return 100.0 * (candidate[metric] - reference[metric]) / max(reference[metric], 1e-12)
    return 100.0 * (reference[metric] - candidate[metric])


def examples_needed(task: str, max_drop: float) -> int:
    """How many examples the guard must check so one changed prediction is a fifth of the tolerance.

    With 80 validation examples a single flipped prediction is 1.25 points, more than a 1-point
    tolerance: the guard would reject every quantized recipe on noise. Classification guards
    below this count are topped up with training examples (quantization error is a property of
    the model, not of unseen data, so training examples measure it as well).
    """
    if task == "regression" or max_drop <= 0:
        return 0
    return math.ceil(500 / max_drop)


def pooled(task: str, parts: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """Metrics of several example sets as one: the guarded metric weighted by their sizes."""
    if task == "embedding":  # a retrieval metric counts its queries, not its examples
        parts = [(m, m.get("queries", n)) for m, n in parts]
    total = sum(count for _, count in parts) or 1
    metric = guarded_metric(task)
    if task == "regression":
        return {metric: math.sqrt(sum(m[metric] ** 2 * n for m, n in parts) / total)}
    return {metric: sum(m[metric] * n for m, n in parts) / total}
