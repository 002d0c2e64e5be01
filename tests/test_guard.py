"""The accuracy guard's fallback ladder: its exact order per quantization mode, and deploys in
which a step in the middle of it must be the one chosen (classification and regression).

The models are built so that the outcome of every recipe is known in advance, by a wide margin:
- ``models:fragile_head`` weighs feature 0 by 100 in every class, which cancels between the
  logits in fp32 but makes any int8 scale of the head's weight columns round its other weights
  to zero: every recipe that quantizes the head fails, keeping the head in fp32 passes.
- ``models:input_outlier`` ignores input feature 0, which holds values near 1000: one
  quantization scale for the whole input tensor then rounds the features that matter to zero,
  so every recipe that quantizes activations fails and weight-only int8 passes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeft.deployment.bundle import Bundle
from edgeft.deployment.guard import head_node_patterns, ladder
from edgeft.deployment.pipeline import DeployOptions, deploy
from edgeft.devices import list_profiles, load_profile

PROFILE = "the profile's recipe"
PER_CHANNEL = "per-channel weight scales"
HEAD = "classifier head kept in fp32"
EMBEDDINGS = "embedding table kept in fp32"
WEIGHT_ONLY = "weight-only int8 (fp32 compute)"
FP32 = "no quantization (fp32)"
HEAD_PATTERNS = ["^/head/"]


def _recipe(**changes):
    return load_profile("raspberry-pi-5").quantization.model_copy(update=changes)  # dynamic, per-tensor


@pytest.mark.parametrize("changes, patterns, steps", [
    ({}, HEAD_PATTERNS, [PROFILE, PER_CHANNEL, HEAD, EMBEDDINGS, WEIGHT_ONLY, FP32]),
    ({"per_channel": True}, HEAD_PATTERNS, [PROFILE, HEAD, EMBEDDINGS, WEIGHT_ONLY, FP32]),
    ({"mode": "static"}, HEAD_PATTERNS, [PROFILE, PER_CHANNEL, HEAD, EMBEDDINGS, WEIGHT_ONLY, FP32]),
    ({"quantize_embeddings": False}, HEAD_PATTERNS, [PROFILE, PER_CHANNEL, HEAD, WEIGHT_ONLY, FP32]),
    ({}, [], [PROFILE, PER_CHANNEL, EMBEDDINGS, WEIGHT_ONLY, FP32]),  # no head found: no head step
    ({"mode": "weight-only", "per_channel": True}, HEAD_PATTERNS, [PROFILE, HEAD, EMBEDDINGS, FP32]),
    ({"mode": "weight-only", "weight_type": "int4"}, HEAD_PATTERNS, [PROFILE, HEAD, EMBEDDINGS, WEIGHT_ONLY, FP32]),
    ({"mode": "fp16"}, HEAD_PATTERNS, [PROFILE, EMBEDDINGS, FP32]),
    ({"mode": "fp16", "quantize_embeddings": False}, HEAD_PATTERNS, [PROFILE, FP32]),
    ({"mode": "none"}, HEAD_PATTERNS, [PROFILE]),
])
def test_ladder_order_per_mode(changes, patterns, steps):
    recipe = _recipe(**changes)
    found = list(ladder(recipe, patterns))
    assert [why for why, _ in found] == steps
    assert found[0][1] == recipe and found[-1][1].mode == "none"  # always ends in fp32, which always fits
    for (_, previous), (why, step) in zip(found, found[1:]):  # each step keeps what the ones before changed
        if why != FP32:
            assert step.per_channel >= previous.per_channel
            assert set(previous.exclude_nodes) <= set(step.exclude_nodes)
            assert step.quantize_embeddings <= previous.quantize_embeddings
    by_step = dict(found)
    if PER_CHANNEL in by_step:
        assert by_step[PER_CHANNEL] == recipe.model_copy(update={"per_channel": True})
    if HEAD in by_step:
        assert tuple(by_step[HEAD].exclude_nodes) == tuple(recipe.exclude_nodes) + tuple(patterns)
        assert by_step[HEAD].mode == recipe.mode
    if EMBEDDINGS in by_step:
        assert not by_step[EMBEDDINGS].quantize_embeddings and by_step[EMBEDDINGS].mode == recipe.mode
    if WEIGHT_ONLY in by_step:
        assert (by_step[WEIGHT_ONLY].mode, by_step[WEIGHT_ONLY].weight_type) == ("weight-only", "int8")
    if FP32 in by_step:
        assert by_step[FP32].mode == "none"


def test_every_built_in_profile_ladder_starts_with_its_recipe_and_ends_in_fp32_once():
    for profile in list_profiles():
        found = list(ladder(profile.quantization, HEAD_PATTERNS))
        assert found[0] == (PROFILE, profile.quantization), profile.name
        assert [recipe.mode for _, recipe in found].count("none") == 1 and found[-1][1].mode == "none", profile.name
        assert len({why for why, _ in found}) == len(found), profile.name


def test_head_patterns_match_the_head_of_a_model():
    assert head_node_patterns(["stem.weight", "blocks.0.linear.weight", "blocks.1.linear.weight", "head.weight",
                               "head.bias"]) == ["^/head/"]
    assert head_node_patterns(["encoder.layer.0.w", "encoder.layer.1.w", "pooler.dense.weight",
                               "classifier.weight"]) == ["^/classifier/", "^/pooler/dense/"]


@pytest.mark.parametrize("factory, loss, device, chosen", [
    ("models:fragile_head", "cross-entropy", "x86-64-avx2", HEAD),
    ("models:input_outlier", "cross-entropy", "raspberry-pi-5", WEIGHT_ONLY),
    ("models:input_outlier", "mse", "raspberry-pi-5", WEIGHT_ONLY),
])
def test_the_guard_chooses_the_first_step_within_a_non_zero_tolerance(export_cache, tmp_path, factory, loss,
                                                                      device, chosen):
    from edgeft.deployment.inference_model import build_inference_model
    from edgeft.deployment.runtime import make_session

    tolerance = 5.0  # points of accuracy, or percent of RMSE
    manifest = export_cache(model=factory, inputs=["x:float32:batch,4,8"], train="last:1", loss=loss,
                            dropout=False).manifest
    artifacts = manifest.folder
    fp32, _ = build_inference_model(artifacts / "forward.onnx", {}, tmp_path / "fp32.onnx", False, None, None)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4, 8)).astype(np.float32)  # 600: enough to resolve a 5-point tolerance
    if factory == "models:input_outlier":
        x[..., 0] *= 1000  # the feature the model ignores
    outputs = make_session(fp32).run(None, {"x": x})[0]
    if loss == "mse":  # targets the fp32 model misses a little, so the RMSE drop is relative to a real error
        labels = (outputs + 0.1 * outputs.std() * rng.standard_normal(outputs.shape)).astype(np.float32)
    else:
        labels = outputs.argmax(axis=1).astype(np.int64)  # fp32 is exactly right on these
        assert np.bincount(labels, minlength=3).min() >= 30  # every class is represented
    np.savez(tmp_path / "val.npz", x=x, labels=labels)
    report = deploy(DeployOptions(source=artifacts, device=device, val=tmp_path / "val.npz", max_drop=tolerance,
                                  output=tmp_path / "bundle"))
    head = head_node_patterns([t["name"] for t in manifest.data["trainable"]["tensors"]])
    assert head == ["^/model/head/"]
    expected = [why for why, _ in ladder(load_profile(device).quantization, head)]
    steps = [attempt["step"] for attempt in report["attempts"]]
    assert steps == expected[: expected.index(chosen) + 1]  # every step before it tried, in order
    assert 0 < steps.index(chosen) < len(expected) - 1  # a middle step, not the profile's nor fp32
    assert [attempt["accepted"] for attempt in report["attempts"]] == [False] * (len(steps) - 1) + [True]
    assert all(attempt["drop"] > 4 * tolerance for attempt in report["attempts"][:-1])  # clearly too lossy
    assert report["chosen"] == chosen and report["accuracy_drop"] <= tolerance
    assert report["validation_examples"] == 600 and report["max_accuracy_drop"] == tolerance
    recipe = dict(ladder(load_profile(device).quantization, head))[chosen]
    written = Bundle(Path(report["bundle"])).manifest.data["quantization"]  # the bundle holds the chosen recipe
    assert written == {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.model_dump().items()}


def test_a_small_validation_set_is_topped_up_and_the_guard_judges_the_pooled_examples(export_cache, tmp_path):
    """20 validation examples cannot resolve a 5-point tolerance (100 are needed), so 80 training
    examples of the run join the check. Here the validation examples lack the outlier that breaks
    activation quantization, so on them alone the profile's recipe looks lossless; the pooled
    check sees the damage and falls back to weight-only int8."""
    from edgeft.deployment.inference_model import build_inference_model
    from edgeft.deployment.runtime import make_session
    from edgeft.training.loop import DataOptions, TrainConfig, train

    manifest = export_cache(model="models:input_outlier", inputs=["x:float32:batch,4,8"], train="last:1",
                            dropout=False).manifest
    fp32, _ = build_inference_model(manifest.path("forward_model"), {}, tmp_path / "fp32.onnx", False, None, None)
    session = make_session(fp32)
    rng = np.random.default_rng(1)
    train_x, candidates = (rng.standard_normal((n, 4, 8)).astype(np.float32) for n in (300, 400))
    train_x[..., 0] *= 1000  # only the training examples carry the outlier
    logits = np.sort(session.run(None, {"x": candidates})[0], axis=1)
    val_x = candidates[np.argsort(logits[:, -1] - logits[:, -2])[-20:]]  # clear decisions: no rounding flips them
    for name, x in (("train", train_x), ("val", val_x)):
        np.savez(tmp_path / f"{name}.npz", x=x, labels=session.run(None, {"x": x})[0].argmax(axis=1).astype(np.int64))
    run = tmp_path / "run"  # a run (its training data tops up the check) that barely moves the weights
    train(manifest.folder, DataOptions(train=tmp_path / "train.npz"), run,
          TrainConfig(epochs=1, batch_size=100, lr=1e-9, val_fraction=0, weight_decay=0), threads=1)
    report = deploy(DeployOptions(source=run, device="x86-64-avx2", val=tmp_path / "val.npz", max_drop=5.0,
                                  output=tmp_path / "bundle"))
    assert report["validation_examples"] == 20 and report["guard_training_examples"] == 80
    first = report["attempts"][0]
    assert first["step"] == PROFILE and first["metrics"]["accuracy"] == report["fp32"]["metrics"]["accuracy"]
    assert not first["accepted"] and first["drop"] > 20  # measured on the 100 pooled examples
    assert report["chosen"] == WEIGHT_ONLY
