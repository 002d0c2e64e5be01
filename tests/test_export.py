"""edgeft export from every kind of source, every --train form, every loss and optimizer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import text_batch
from edgeft.backends.portable import PortableTrainer
from edgeft.deployment.runtime import loss_value
from edgeft.manifest import load_manifest

LABELS = ["lights_on", "lights_off", "weather"]


def trainable_names(result) -> list[str]:
    return [t["name"] for t in result.manifest.data["trainable"]["tensors"]]


def test_bare_text_encoder_gets_mean_pool_head(tiny_bert, export_cache):
    result = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1")
    data = load_manifest(result.folder).data  # verifies every hash
    assert data["kind"] == "artifacts" and data["format_version"] == 1
    assert data["task"] == "classification" and data["modality"] == "text"
    assert [i["name"] for i in data["inputs"]] == ["input_ids", "attention_mask"]
    assert data["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}
    assert data["labels"]["names"] == LABELS
    assert data["labels"]["input"] == {"name": "labels", "dtype": "int64", "shape": ["batch"]}
    assert data["preprocessing"]["kind"] == "tokenizer" and data["preprocessing"]["max_length"] == 64
    names = trainable_names(result)
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert all(n.startswith("backbone.encoder.layer.1.") for n in names[:-2]) and len(names) == 18
    assert not any("pooler" in t.name for t in result.tensors)  # unused pooler left out
    assert set(data["files"]) == {"forward_model", "prefix_model", "tail_portable_step", "tail_portable_eval",
                                  "portable_optimizer", "portable_checkpoint", "labels", "tokenizer"}
    assert data["formats"] == ["portable"] and data["repairs"] == []  # no ORT training artifacts unless asked
    assert (result.folder / "labels.txt").read_text().split() == LABELS
    assert data["tool"]["onnxruntime"] and data["tool"]["edgeft"]
    # a fresh head over 3 classes starts near ln(3)
    assert abs(result.smoke_loss - math.log(3)) < 0.5


def test_text_model_trains_and_improves(tiny_bert, export_cache):
    result = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1")
    batch = text_batch(result.folder, ["turn on the lights", "lights off please", "will it rain",
                                       "kitchen lights on", "turn off the bedroom lights", "what is the weather"])
    batch["labels"] = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
    trainer = PortableTrainer(result.manifest, threads=1)
    trainer.set_learning_rate(1e-2)
    first, _ = trainer.eval_step(batch)
    for _ in range(20):
        trainer.train_step(batch)
        trainer.optimizer_step()
    last, logits = trainer.eval_step(batch)
    assert last < first * 0.5
    assert (np.argmax(logits, axis=1) == batch["labels"]).all()


def test_existing_classification_head_is_used(tiny_bert_classifier, export_cache):
    result = export_cache(model=str(tiny_bert_classifier), train="head")
    data = result.manifest.data
    assert data["labels"]["names"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert trainable_names(result) == ["model.bert.pooler.dense.weight", "model.bert.pooler.dense.bias",
                                       "model.classifier.weight", "model.classifier.bias"]
    assert "used the folder's sequence-classification head" in result.notes


def test_head_replaced_when_label_count_differs(tiny_bert_classifier, export_cache):
    result = export_cache(model=str(tiny_bert_classifier), train="head", num_labels=5)
    assert result.manifest.data["output"]["shape"] == ["batch", 5]
    shapes = {t.name: t.shape for t in result.tensors}
    assert shapes["model.classifier.weight"] == [5, 32]


def test_image_classifier(tiny_vit, export_cache):
    result = export_cache(model=str(tiny_vit), train="head", label_names=["cat", "dog"])
    data = result.manifest.data
    assert data["modality"] == "image"
    assert data["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 16, 16]}]
    assert data["preprocessing"]["kind"] == "image" and data["preprocessing"]["height"] == 16
    assert "preprocessor_config" in data["files"]
    assert trainable_names(result) == ["model.vit.layernorm.weight", "model.vit.layernorm.bias",
                                       "model.classifier.weight", "model.classifier.bias"]


def test_onnx_source_regex_and_last(tiny_onnx, export_cache):
    head = export_cache(model=str(tiny_onnx), train="^head\\.")
    assert trainable_names(head) == ["head.weight", "head.bias"]
    assert head.manifest.data["source"]["kind"] == "onnx"
    assert head.manifest.data["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 8]}]
    last = export_cache(model=str(tiny_onnx), train="last:1")
    assert trainable_names(last) == ["blocks.2.linear.weight", "blocks.2.linear.bias", "blocks.2.norm.weight",
                                     "blocks.2.norm.bias", "head.weight", "head.bias"]


@pytest.mark.parametrize("spec,expected_blocks", [("head", set()), ("last:1", {"2"}), ("last:3", {"0", "1", "2"})])
def test_train_forms_on_torch_factory(export_cache, spec, expected_blocks):
    result = export_cache(model="models:mlp", inputs=["x:float32:batch,8"], train=spec)
    names = trainable_names(result)
    assert {n.split(".")[2] for n in names if n.startswith("model.blocks.")} == expected_blocks
    assert names[-2:] == ["model.head.weight", "model.head.bias"]
    assert not any(n.startswith("model.stem.") for n in names)
    frozen = sum(t.numel for t in result.frozen)
    assert result.manifest.data["trainable"]["frozen_parameters"] == frozen


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("loss", ["cross-entropy", "bce", "mse", "l1"])
def test_every_loss_and_optimizer(export_cache, loss, optimizer):
    result = export_cache(model="models:mlp4", inputs=["x:float32:batch,8"], train="last:1", loss=loss,
                          optimizer=optimizer, dropout=False)
    data = result.manifest.data
    assert data["loss"] == loss and data["optimizer"] == optimizer
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    if loss == "cross-entropy":
        labels = rng.integers(0, 4, 16).astype(np.int64)
        assert data["labels"]["input"]["shape"] == ["batch"]
    else:
        labels = (rng.random((16, 4)) > 0.5).astype(np.float32) if loss == "bce" else \
            rng.standard_normal((16, 4)).astype(np.float32)
        assert data["labels"]["input"] == {"name": "labels", "dtype": "float32", "shape": ["batch", 4]}
    batch = {"x": x, "labels": labels}
    trainer = PortableTrainer(result.manifest, threads=1)
    trainer.set_learning_rate(0.05 if optimizer == "sgd" else 0.01)
    before, logits = trainer.eval_step(batch)
    assert before == pytest.approx(loss_value(data["task"], logits, labels, loss), rel=1e-5)
    for _ in range(25):
        trainer.train_step(batch)
        trainer.optimizer_step()
    after, _ = trainer.eval_step(batch)
    assert after < before * 0.9


@pytest.mark.ort_training
def test_ort_training_format_adds_onnx_runtimes_artifacts(tiny_bert, export_cache):
    from edgeft.backends.ort_training import OrtTrainer

    result = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1",
                          formats=("portable", "ort-training"))
    data = load_manifest(result.folder).data
    assert data["formats"] == ["portable", "ort-training"]
    assert set(data["files"]) >= {"training_model", "eval_model", "optimizer_model", "checkpoint",
                                  "tail_training_model", "tail_checkpoint", "tail_portable_step"}
    assert any("LayerNormalization" in r for r in data["repairs"])
    batch = text_batch(result.folder, ["turn on the lights", "will it rain"])
    batch["labels"] = np.array([0, 2], dtype=np.int64)
    ort_loss, _ = OrtTrainer(result.manifest, threads=1).eval_step(batch)
    portable_loss, _ = PortableTrainer(result.manifest, threads=1).eval_step(batch)
    assert ort_loss == pytest.approx(portable_loss, rel=1e-5)


def test_ort_training_format_without_the_api_is_a_clear_error(tiny_onnx, tmp_path):
    from edgeft.errors import EdgeftError
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts
    from edgeft.ortcompat import has_training_api

    if has_training_api():
        pytest.skip("ONNX Runtime's training API is installed here")
    with pytest.raises(EdgeftError) as info:
        export_artifacts(ExportOptions(model=str(tiny_onnx), output=tmp_path / "out", formats=("ort-training",)))
    assert "training API is not installed" in info.value.what and "ort-training" in info.value.hint
    assert not (tmp_path / "out").exists()
