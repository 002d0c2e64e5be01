"""The portable training backend: standard-ONNX step graphs on plain onnxruntime sessions.

Gradients against PyTorch autograd, steps against ORT's training API (AdamW and SGD, with
gradient accumulation), a fine-tune that learns, checkpoints that resume in the other backend,
deterministic graph files, and the packaging markers that pick onnxruntime per platform.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import ORT, text_batch
from edgeft.backends.portable import PortableTrainer
from edgeft.backends.select import open_trainer
from edgeft.backends.state import read_state
from edgeft.manifest import TAIL_PREFIX
from edgeft.training.loop import DataOptions, TrainConfig, train
from test_train import LABELS, dataset, held_out_rows, write_csv

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["turn on the lights", "play some music please", "what is the weather", "is it rain at the door",
         "lights off in the kitchen", "stop the music now"]


@pytest.fixture(scope="module")
def bert_artifacts(tiny_bert, export_cache):  # the same export as test_train's (shared in a session)
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", dropout=False)


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("portable-data")
    return write_csv(root / "train.csv", dataset(0, 30)), write_csv(root / "val.csv", dataset(1, 10))


def _forward_weights(folder: Path) -> dict[str, "torch.Tensor"]:  # noqa: F821
    import torch

    forward = onnx.load(str(folder / "forward.onnx"))
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in forward.graph.initializer}


def _assert_gradients_match(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    """Relative error per tensor below 1e-3; a tensor whose true gradient is ~0 (e.g. the attention
    key bias, cancelled by softmax) is compared against the overall gradient scale."""
    assert set(got) == set(expected)
    scale = max(np.linalg.norm(g) for g in expected.values())
    worst = 0.0
    for name, want in expected.items():
        error = np.linalg.norm(got[name].reshape(want.shape) - want)
        if np.linalg.norm(want) < 1e-6 * scale:
            assert error < 1e-6 * scale, f"{name}: gradient noise {error:.2e} vs scale {scale:.2e}"
            continue
        rel = error / np.linalg.norm(want)
        assert rel < 1e-3, f"{name}: relative gradient error {rel:.2e}"
        worst = max(worst, rel)
    return worst


def test_tiny_bert_gradients_match_pytorch_autograd(bert_artifacts, tiny_bert):
    import torch
    from transformers import AutoModel

    from edgeft.exporting.hf_source import MeanPoolClassifier

    batch = text_batch(bert_artifacts.folder, TEXTS)
    batch["labels"] = np.array([0, 1, 2, 2, 0, 1], dtype=np.int64)
    trainer = PortableTrainer(bert_artifacts.manifest, threads=1)  # prefix, then the tail step graph
    loss, logits = trainer.train_step(batch)

    backbone = AutoModel.from_pretrained(tiny_bert, local_files_only=True, attn_implementation="eager")
    reference = MeanPoolClassifier(backbone, 32, 3).eval()
    weights = _forward_weights(bert_artifacts.folder)
    reference.load_state_dict({k: weights[k] for k in reference.state_dict() if k in weights}, strict=False)
    out = reference(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"]))
    expected_loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(batch["labels"]))
    expected_loss.backward()
    params = dict(reference.named_parameters())
    trainable = [t.name for t in bert_artifacts.trainable]
    assert loss == pytest.approx(expected_loss.item(), rel=1e-5)
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-4, atol=1e-5)
    _assert_gradients_match(trainer.gradients(), {n: params[n].grad.numpy() for n in trainable})


@pytest.mark.parametrize("backend", ["portable", ORT])
@pytest.mark.parametrize("loss", ["cross-entropy", "bce", "mse", "l1"])
def test_mlp_gradients_match_pytorch_autograd_for_every_loss(export_cache, loss, backend):
    import torch

    from models import TinyMLP

    result = export_cache(model="models:mlp", inputs=["x:float32:batch,8"], train="last:1", loss=loss, dropout=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 8)).astype(np.float32)
    if loss == "cross-entropy":
        labels = rng.integers(0, 3, 8).astype(np.int64)
    elif loss == "bce":
        labels = rng.integers(0, 2, (8, 3)).astype(np.float32)
    else:
        labels = rng.standard_normal((8, 3)).astype(np.float32)
    trainer = open_trainer(result.manifest, backend, threads=1)
    value, _ = trainer.train_step({"x": x, "labels": labels})

    reference = TinyMLP().eval()
    weights = _forward_weights(result.folder)
    reference.load_state_dict({k: weights[f"model.{k}"] for k in reference.state_dict()})
    out, target = reference(torch.from_numpy(x)), torch.from_numpy(labels)
    functional = torch.nn.functional
    expected = {"cross-entropy": functional.cross_entropy, "bce": functional.binary_cross_entropy_with_logits,
                "mse": functional.mse_loss, "l1": functional.l1_loss}[loss](out, target)
    expected.backward()
    params = {f"model.{k}": v for k, v in reference.named_parameters()}
    assert value == pytest.approx(expected.item(), rel=1e-5)
    _assert_gradients_match(trainer.gradients(), {t.name: params[t.name].grad.numpy() for t in result.trainable})


def test_the_step_applies_dropout_on_any_onnxruntime(tiny_bert, export_cache):
    """Plain onnxruntime's optimizer removes Dropout nodes (EliminateDropout) even in training
    mode, which would train without dropout in silence; the step session keeps them: the loss
    depends on the seed, repeats with it, and differs from the eval graph's."""
    import onnxruntime as ort

    manifest = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").manifest  # dropout on
    batch = _tail_batches(manifest, TEXTS, [0, 1, 2, 2, 0, 1])[0]
    trainer = PortableTrainer(manifest, threads=1, prefix=TAIL_PREFIX)
    losses = []
    for seed in (7, 8, 7):
        ort.set_seed(seed)
        losses.append(trainer.train_step(batch)[0])
    assert losses[0] == losses[2] and losses[0] != losses[1]
    assert trainer.eval_step(batch)[0] not in losses


@pytest.mark.ort_training
def test_backends_match_with_dropout_on_step_for_step(tiny_bert, export_cache):
    """Both backends draw their dropout masks from onnxruntime.set_seed: with the same seed before
    each step they give the same losses, gradients and weights, with dropout really on."""
    import onnxruntime as ort

    from edgeft.backends.ort_training import OrtTrainer

    manifest = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").manifest  # dropout on
    ort_trainer = OrtTrainer(manifest, threads=1, prefix=TAIL_PREFIX)
    portable = PortableTrainer(manifest, threads=1, prefix=TAIL_PREFIX)
    batches = _tail_batches(manifest, TEXTS, [0, 1, 2, 2, 0, 1])
    clean = portable.eval_step(batches[0])[0]
    seeded = []
    for seed in (7, 8):
        ort.set_seed(seed)
        seeded.append(PortableTrainer(manifest, threads=1, prefix=TAIL_PREFIX).train_step(batches[0])[0])
    assert len({round(v, 6) for v in (clean, *seeded)}) == 3  # dropout on: the mask changes the loss
    for step in range(4):
        losses = {}
        for trainer in (ort_trainer, portable):
            ort.set_seed(100 + step)
            losses[trainer.backend] = trainer.train_step(batches[step % 2])[0]
        assert losses["portable"] == pytest.approx(losses["ort-training"], rel=1e-5), f"step {step + 1}"
        _assert_gradients_match(portable.gradients(), ort_trainer.gradients())
        for trainer in (ort_trainer, portable):
            trainer.set_learning_rate(3e-3)
            trainer.optimizer_step()
        expected, got = ort_trainer.parameters(), portable.parameters()
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value.reshape(got[name].shape), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} after step {step + 1}")


def _tail_batches(manifest, texts: list[str], labels: list[int]) -> list[dict[str, np.ndarray]]:
    import onnxruntime as ort

    prefix = ort.InferenceSession(str(manifest.path("prefix_model")), providers=["CPUExecutionProvider"])
    batches = []
    for start in (0, 3):
        batch = text_batch(manifest.folder, texts[start : start + 3])
        out = dict(zip((o.name for o in prefix.get_outputs()),
                       prefix.run(None, {i.name: batch[i.name] for i in prefix.get_inputs()})))
        out.update({n: batch[n] for n in manifest.data["cache"]["raw_inputs"]})
        out["labels"] = np.array(labels[start : start + 3], dtype=np.int64)
        batches.append(out)
    return batches


@pytest.mark.ort_training
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_same_losses_and_weights_as_ort_training(tiny_bert, export_cache, tmp_path, optimizer):
    from edgeft.backends.ort_training import OrtTrainer, with_weight_decay

    result = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", dropout=False,
                          optimizer=optimizer)
    manifest = result.manifest
    decay = 0.01 if optimizer == "adamw" else 0.0
    optimizer_model = with_weight_decay(manifest.path("tail_optimizer_model"), tmp_path / "opt.onnx", decay) \
        if decay else None
    ort_trainer = OrtTrainer(manifest, threads=1, prefix=TAIL_PREFIX, optimizer_model=optimizer_model)
    portable = PortableTrainer(manifest, threads=1, prefix=TAIL_PREFIX, weight_decay=decay)
    batches = _tail_batches(manifest, TEXTS, [0, 1, 2, 2, 0, 1])
    for step in range(4):
        for trainer in (ort_trainer, portable):
            losses = [trainer.train_step(b)[0] for b in batches]  # two micro-batches: gradients add up
            trainer.set_learning_rate(1e-2 if optimizer == "sgd" else 3e-3)
            trainer.optimizer_step()
            trainer.losses = losses  # type: ignore[union-attr]
        np.testing.assert_allclose(portable.losses, ort_trainer.losses, rtol=1e-5)
        assert portable.gradients() == {}
        expected, got = ort_trainer.parameters(), portable.parameters()
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value.reshape(got[name].shape), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} after step {step + 1}")
    assert portable.eval_step(batches[0])[0] == pytest.approx(ort_trainer.eval_step(batches[0])[0], rel=1e-5)


def test_fine_tuning_improves_accuracy_on_held_out_phrasings(bert_artifacts, text_data, tmp_path):
    val_csv = write_csv(tmp_path / "held_out.csv", held_out_rows())  # no training sentence among them
    summary = train(bert_artifacts.folder, DataOptions(train=text_data[0], val=val_csv), tmp_path / "run",
                    TrainConfig(epochs=10, batch_size=8, lr=3e-3, seed=0), threads=1, backend="portable")
    assert summary["backend"] == "portable" and summary["artifact_set"] == "tail"
    assert summary["before"]["accuracy"] < 0.6  # measured: 0.43 before, 0.90 after
    assert summary["after"]["accuracy"] >= 0.85
    assert summary["after"]["loss"] < summary["before"]["loss"] * 0.5
    assert (tmp_path / "run" / "best" / "trainable.npz").is_file()
    assert not (tmp_path / "run" / "best" / "checkpoint").exists()  # no ORT state from this backend


def test_no_cache_runs_the_prefix_every_step_and_matches_the_cached_run(bert_artifacts, text_data, tmp_path):
    options = DataOptions(train=text_data[0], val=text_data[1])
    config = dict(epochs=1, batch_size=8, lr=3e-3, seed=0)
    cached = train(bert_artifacts.folder, options, tmp_path / "a", TrainConfig(**config), threads=1, backend="portable")
    full = train(bert_artifacts.folder, options, tmp_path / "b", TrainConfig(cache=False, **config), threads=1,
                 backend="portable")
    assert full["artifact_set"] == "full" and cached["artifact_set"] == "tail"
    assert full["after"]["loss"] == pytest.approx(cached["after"]["loss"], rel=1e-4)


@pytest.mark.parametrize("first, second", [pytest.param("portable", "ort-training", marks=pytest.mark.ort_training),
                                           pytest.param("ort-training", "portable", marks=pytest.mark.ort_training)])
def test_checkpoint_resumes_in_the_other_backend(bert_artifacts, text_data, tmp_path, first, second):
    options = DataOptions(train=text_data[0], val=text_data[1])
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, seed=1, keep=3)
    run = tmp_path / "run"
    train(bert_artifacts.folder, options, run, config, threads=1, backend=first)
    saved = sorted((run / "checkpoints").glob("step-*"))
    assert len(saved) == 3
    expected = read_state(saved[-1] / "trainable.npz")
    shutil.rmtree(saved[-1])  # as if killed during the last epoch
    summary = train(bert_artifacts.folder, options, run, config, threads=1, backend=second, resume=True)
    assert summary["backend"] == second and summary["epochs"] == 3
    got = read_state(sorted((run / "checkpoints").glob("step-*"))[-1] / "trainable.npz")
    assert got.step == expected.step and set(got.moments) == set(expected.moments)
    for name, value in expected.params.items():  # moments and step carried over: same weights
        np.testing.assert_allclose(got.params[name], value.reshape(got.params[name].shape), rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1, 2, 3]


@pytest.mark.ort_training
def test_ort_checkpoints_read_through_the_generated_bindings_and_damage_is_refused(bert_artifacts, tmp_path):
    """ONNX Runtime's own checkpoint holds the artifacts' starting weights; what edgeft writes in
    that format loads back equal; truncated or garbled copies raise only EdgeftError."""
    import random

    from edgeft.backends.ort_checkpoint import write_ort_checkpoint
    from edgeft.errors import EdgeftError

    ort_file = bert_artifacts.folder / "checkpoint"
    state = read_state(ort_file)
    start = read_state(bert_artifacts.manifest.path("portable_checkpoint"))
    assert list(state.params) == list(start.params) and state.step == 0 and not state.moments
    for name, value in start.params.items():
        np.testing.assert_array_equal(state.params[name].reshape(value.shape), value, err_msg=name)
    moments = {n: [v + 1, v * v] for n, v in state.params.items()}
    written = tmp_path / "written"
    write_ort_checkpoint(written, ort_file, {n: v * 2 for n, v in state.params.items()}, moments, 7)
    back = read_state(written)
    assert back.step == 7 and back.optimizer == "adamw"
    for name, value in state.params.items():
        np.testing.assert_array_equal(back.params[name], value * 2)
        np.testing.assert_array_equal(back.moments[name][1], value * value)
    source, rng, damaged = written.read_bytes(), random.Random(0), tmp_path / "damaged"
    for case in range(200):
        data = bytearray(source[: rng.randrange(8, len(source))] if case < 60 else source)
        for _ in range(0 if case < 60 else rng.randrange(1, 6)):
            data[rng.randrange(8, min(len(data), 4000))] = rng.randrange(256)
        damaged.write_bytes(bytes(data))
        try:
            read_state(damaged)
        except EdgeftError:
            pass


def test_portable_graphs_are_standard_onnx_and_in_the_manifest(bert_artifacts):
    manifest = bert_artifacts.manifest
    section = manifest.data["portable"]
    assert section["available"] and section["graphs"] == "tail" and section["gradients"].startswith("onnx-ad")
    for key in ("tail_portable_step", "tail_portable_eval", "portable_optimizer", "portable_checkpoint"):
        assert key in manifest.data["files"]
    step = onnx.load(str(manifest.path("tail_portable_step")))
    assert {n.domain for n in step.graph.node} <= {"", "ai.onnx"}
    assert {o.name for o in step.graph.output} == {"loss", "logits"} | {f"{t.name}_grad" for t in bert_artifacts.trainable}
    onnx.checker.check_model(step)
    optimizer = onnx.load(str(manifest.path("portable_optimizer")))
    assert {n.domain for n in optimizer.graph.node} <= {"", "ai.onnx"}


def test_packaging_installs_exactly_one_onnxruntime_per_platform():
    tomllib = pytest.importorskip("tomllib")
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [Requirement(d) for d in project["dependencies"]]
    extra = [Requirement(d) for d in project["optional-dependencies"]["ort-training"]]
    assert "onnx-ad" in {d.name for d in deps}
    for system, machine in [("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64"), ("Darwin", "x86_64"),
                            ("Windows", "AMD64"), ("Linux", "armv7l")]:
        for python in ("3.9", "3.11", "3.12", "3.13", "3.14"):
            env = {**default_environment(), "platform_system": system, "platform_machine": machine,
                   "python_version": python}
            chosen = [d for d in deps if d.name.startswith("onnxruntime") and (d.marker is None or d.marker.evaluate(env))]
            assert [d.name for d in chosen] == ["onnxruntime"], (system, machine, python)  # plain onnxruntime everywhere
            newest = chosen[0].specifier.contains("1.30.0") and not chosen[0].specifier.contains("1.29.0")
            version = tuple(int(part) for part in python.split("."))
            assert newest == (version >= (3, 11)), (python, str(chosen[0].specifier))  # 1.24+ need Python 3.11
            training = [d.name for d in extra if d.name.startswith("onnxruntime") and d.marker.evaluate(env)]
            has_wheels = (system, machine) in {("Linux", "x86_64"), ("Darwin", "arm64")} and version < (3, 13)
            assert training == (["onnxruntime-training-cpu"] if has_wheels else []), (system, machine, python)


@pytest.mark.ort_training
def test_full_graph_set_when_nothing_frozen_comes_first(export_cache):
    result = export_cache(model="models:mlp", inputs=["x:float32:batch,8"], train=r"model\..*", dropout=False)
    data = result.manifest.data
    assert not data["cache"]["available"] and data["portable"]["graphs"] == "full"
    assert "portable_step" in data["files"] and "tail_portable_step" not in data["files"]
    batch = {"x": np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32),
             "labels": np.arange(8, dtype=np.int64) % 3}
    from edgeft.backends.ort_training import OrtTrainer

    ort_trainer, portable = OrtTrainer(result.manifest, threads=1), PortableTrainer(result.manifest, threads=1)
    assert portable.train_step(batch)[0] == pytest.approx(ort_trainer.train_step(batch)[0], rel=1e-5)
    _assert_gradients_match(portable.gradients(), {k: v for k, v in ort_trainer.gradients().items()})
