"""The frozen prefix of a device package: folded, fused and quantized for its profile, guarded.

The frozen part never changes, so it can run quantized while the device trains: the tail then
learns on exactly the features the deployed bundle will compute, and the frozen-prefix pass runs
at int8 speed. The recipe follows the profile and falls back like deploy's accuracy guard
(``edgeft.deployment.guard.ladder``), judged here on features: linear probes fitted on the fp32
prefix's features (``edgeft.packaging.probe``) must score within the profile's tolerance on the
candidate's features of the same guard examples as on the fp32 ones. Without guard examples the profile's recipe is taken
unchecked, and the package says so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeft.deployment.guard import ladder, quality_drop
from edgeft.deployment.inference_model import drop_dropout, fold_constants, fuse_transformer
from edgeft.deployment.measure import sample_feed
from edgeft.deployment.quantize import quantize
from edgeft.deployment.runtime import make_session, session_config
from edgeft.devices import DeviceProfile
from edgeft.manifest import Manifest
from edgeft.packaging.probe import Probe, pooled_features


@dataclass
class PreparedPrefix:
    """The chosen prefix model and how it was chosen."""

    path: Path
    recipe: Any  # devices.Quantization
    chosen: str  # the ladder step taken
    session_config: dict[str, str]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    guard: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fp32_prefix(manifest: Manifest, profile: DeviceProfile, out: Path) -> tuple[Path, list[str]]:
    """The artifacts' prefix with ORT's basic optimizations folded in (its weights then reach the
    MatMuls as initializers the quantizers see) and, for transformer encoders where the profile
    asks, the attention / LayerNorm / GELU fusions."""
    model = onnx.load(str(manifest.path("prefix_model")))
    drop_dropout(model)
    with tempfile.TemporaryDirectory(prefix="edgeft-prefix-") as tmp:
        folded_path = Path(tmp) / "folded.onnx"
        folded = fold_constants(model, folded_path)
        notes = [f"constant folding: {len(model.graph.node)} -> {len(folded.graph.node)} nodes"]
        if profile.runtime.fuse_transformer and manifest.data["modality"] == "text":
            source = manifest.data.get("source", {})
            try:
                fused = fuse_transformer(folded_path, out, source.get("num_attention_heads") or 0,
                                         source.get("hidden_size") or 0)
                notes.append("transformer fusions: " + (", ".join(fused) or "none matched"))
                return out, notes
            except Exception as exc:  # noqa: BLE001 -- the fuser is best effort; the folded model is valid
                notes.append(f"transformer fusions skipped ({type(exc).__name__}: {exc})")
        onnx.save(folded, str(out))
    return out, notes


def _calibration(manifest: Manifest, guard: Any, count: int) -> list[dict[str, np.ndarray]]:
    """Input batches for static quantization: guard examples, else sample inputs."""
    if guard is not None and len(guard):
        order = np.random.default_rng(0).permutation(len(guard))[:count]
        return [guard.inputs(order[i : i + 8]) for i in range(0, len(order), 8)]
    return [sample_feed(manifest.data, manifest.folder, 8, 32, seed=i) for i in range(max(1, count // 8))]


def prepare_prefix(manifest: Manifest, profile: DeviceProfile, work: Path, guard: Any = None,
                   max_drop: float | None = None,
                   progress: Callable[[str], None] | None = None) -> PreparedPrefix:
    """Write candidates into ``work`` and return the first the guard accepts (see the module docstring).

    ``guard`` is an ExampleSet of labelled examples (None: no check)."""
    step = progress or (lambda _text: None)
    tolerance = profile.targets.max_accuracy_drop if max_drop is None else max_drop
    level = profile.runtime.graph_optimization
    task = manifest.data["task"]
    num_labels = len(manifest.data["labels"]["names"])
    boundary = manifest.data["cache"]["boundary"]
    step("preparing the frozen prefix (constant folding, fusions)")
    reference, notes = fp32_prefix(manifest, profile, work / "prefix-fp32.onnx")

    def features(model: Path, config: dict[str, str]) -> np.ndarray:
        return pooled_features(make_session(model, None, level, config), guard, boundary)

    checked = guard is not None and len(guard) >= 10
    section: dict[str, Any] = {"examples": len(guard) if guard is not None else 0, "max_drop": tolerance,
                               "checked": checked, "method": "retrieval among the examples (recall@1) by the cosine "
                                                              "similarity of each candidate's pooled features"
                               if task == "embedding" else "ridge probes fitted on the fp32 prefix's pooled features "
                                                           "(5-fold cross-validation), scored on each candidate's"}
    if checked:
        step("frozen prefix: probing the fp32 features")
        probe = Probe(task, features(reference, {}), guard.labels(np.arange(len(guard))), num_labels)
        section["fp32"] = {k: round(v, 6) for k, v in probe.reference.items()}
        if task != "embedding":
            section["ridge"] = round(probe.strength, 4)
    else:
        section["note"] = ("not checked: no guard data (export --guard-data FILE, labelled examples of the task)"
                           if guard is None else f"not checked: {len(guard)} guard example(s), at least 10 are needed")
    calibration = _calibration(manifest, guard, profile.quantization.calibration_examples) \
        if profile.quantization.mode == "static" else []
    attempts: list[dict[str, Any]] = []
    for why, recipe in ladder(profile.quantization, []):
        step(f"frozen prefix: {why}")
        candidate = work / f"prefix-candidate-{len(attempts)}.onnx"
        if recipe.mode == "none":
            candidate = reference
            recipe_notes = ["fp32"]
        else:
            recipe_notes = quantize(reference, candidate, recipe, calibration)
        config = session_config(recipe.mode)
        attempt: dict[str, Any] = {"step": why, "recipe": recipe.model_dump(), "notes": recipe_notes,
                                   "size_mb": round(candidate.stat().st_size / 2**20, 3)}
        if checked:
            found = probe.metrics(features(candidate, config))
            attempt["metrics"] = {k: round(v, 6) for k, v in found.items()}
            attempt["drop"] = round(quality_drop(task, probe.reference, found), 4)
            attempt["accepted"] = attempt["drop"] <= tolerance + 1e-9
        else:
            attempt["accepted"] = True
        attempts.append(attempt)
        if attempt["accepted"]:
            if recipe.mode == "none" and profile.quantization.mode != "none":
                notes.append(f"no quantized prefix held the accuracy (tolerance {tolerance:g}): the prefix stays fp32")
            return PreparedPrefix(path=candidate, recipe=recipe, chosen=why, session_config=config,
                                  attempts=attempts, guard=section, notes=notes)
    raise AssertionError("the ladder ends with fp32, which always passes")  # pragma: no cover
