"""The Python API alone: export, train, evaluate, deploy and predict with string paths and data in
memory, the typed results, and an ``import edgeft`` that changes nothing in the process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from test_train import HELD_OUT, LABELS, dataset


def held_out_pairs() -> list[tuple[str, str]]:
    return [(text, label) for label, texts in HELD_OUT.items() for text in texts]


@pytest.fixture(scope="module")
def api_run(tiny_bert, tmp_path_factory):
    """Export, then train on (text, label) pairs, every path a str."""
    import edgeft

    root = tmp_path_factory.mktemp("api")
    notes: list[str] = []
    artifacts = edgeft.export(str(tiny_bert), labels=LABELS, train="last:1", output=str(root / "artifacts"),
                              dropout=False, progress=notes.append)
    run = edgeft.train(artifacts, dataset(0, 30), val=held_out_pairs(), run_dir=str(root / "run"), epochs=10,
                       batch_size=8, lr=3e-3, threads=1, progress=notes.append)
    return root, artifacts, run, notes


def test_the_api_trains_from_pairs_and_returns_typed_results(api_run):
    import edgeft

    root, artifacts, run, notes = api_run
    assert isinstance(artifacts, edgeft.Artifacts) and artifacts.kind == "artifacts"
    assert artifacts.labels == LABELS and artifacts.task == "classification"
    assert artifacts.trainable[-1] == "classifier.bias" and artifacts.built.smoke_loss > 0
    assert isinstance(run, edgeft.Run) and run.path == root / "run"
    assert run.before.accuracy < 0.6 and run.after.accuracy >= 0.85  # held-out phrasings, as test_train
    assert [h["epoch"] for h in run.history] == list(range(11))
    assert any("exporting" in n for n in notes) and any(n.startswith("epoch 10: train loss") for n in notes)
    # the run keeps the data it was given in memory, and its record points there
    kept = [json.loads(line) for line in (root / "run" / "data" / "train.jsonl").read_text().splitlines()]
    assert kept[0] == {"text": dataset(0, 30)[0][0], "label": dataset(0, 30)[0][1]} and len(kept) == 90
    record = json.loads((root / "run" / "run.json").read_text())
    assert record["data"]["train"]["path"] == "data/train.jsonl" and record["data"]["val"]["path"] == "data/val.jsonl"


def test_evaluate_takes_pairs_files_and_every_kind_of_model(api_run):
    import edgeft

    root, artifacts, run, _ = api_run
    metrics = edgeft.evaluate(run, held_out_pairs())
    assert isinstance(metrics, edgeft.Metrics) and metrics.accuracy == pytest.approx(run.after.accuracy)
    assert metrics.examples == 30 and metrics.labels == LABELS and metrics.rmse is None
    assert sum(map(sum, metrics.confusion)) == 30 and metrics.record["skipped"] == 0
    before = edgeft.evaluate(str(artifacts.path), str(root / "run" / "data" / "val.jsonl"))
    assert before.accuracy == pytest.approx(run.before.accuracy)


def test_deploy_and_predict_give_label_names_and_resume_knows_the_data(api_run):
    import edgeft

    root, artifacts, run, _ = api_run
    # no val given: deploy checks on the run's own (kept) validation data
    bundle = edgeft.deploy(str(run.path), device="x86-64-avx2", output=str(root / "bundle"))
    assert isinstance(bundle, edgeft.Bundle) and bundle.report["validation_examples"] == 30
    one = bundle.predict("turn on the kitchen lights")
    assert len(one) == 1 and isinstance(one[0], edgeft.Prediction) and one[0].label in LABELS
    predictions = bundle.predict([text for text, _ in held_out_pairs()])
    assert list(predictions[0].scores) == sorted(predictions[0].scores, key=predictions[0].scores.get, reverse=True)
    assert sum(predictions[0].scores.values()) == pytest.approx(1.0, abs=1e-4)
    accuracy = np.mean([p.label == label for p, (_, label) in zip(predictions, held_out_pairs())])
    assert accuracy == pytest.approx(edgeft.evaluate(bundle, held_out_pairs()).accuracy)
    # the same pairs again resume the finished run (nothing left to do); other pairs are refused
    again = edgeft.train(artifacts, dataset(0, 30), val=held_out_pairs(), run_dir=root / "run", epochs=10,
                         batch_size=8, lr=3e-3, threads=1, resume=True)
    assert again.summary["steps"] == run.summary["steps"]
    with pytest.raises(edgeft.EdgeftError, match="another"):
        edgeft.train(artifacts, dataset(5, 30), val=held_out_pairs(), run_dir=root / "run", epochs=10,
                     batch_size=8, lr=3e-3, threads=1, resume=True)


def test_api_mistakes_are_clear(api_run, tmp_path):
    import edgeft

    _, artifacts, _, _ = api_run
    with pytest.raises(TypeError, match="epoch"):
        edgeft.train(artifacts, dataset(0, 3), run_dir=tmp_path / "r", epoch=3)
    with pytest.raises(edgeft.EdgeftError, match="not a \\(text, label\\) pair"):
        edgeft.train(artifacts, ["just a text"], run_dir=tmp_path / "r")
    with pytest.raises(edgeft.EdgeftError, match="no column|label 'toaster'") as caught:
        edgeft.evaluate(artifacts, [("make toast", "toaster")])
    assert "toaster" in str(caught.value)
    assert not (tmp_path / "r").exists()


def test_import_edgeft_changes_nothing_in_the_process():
    """Modules, environment and logging are as they were, and the API loads on first use."""
    code = """
import logging, os, sys
before = (set(sys.modules), dict(os.environ), logging.root.manager.disable, list(logging.root.handlers),
          dict(logging.root.manager.loggerDict))
import edgeft
after = (set(sys.modules), dict(os.environ), logging.root.manager.disable, list(logging.root.handlers),
         dict(logging.root.manager.loggerDict))
new = sorted(after[0] - before[0])
print(new, after[1:] == before[1:])
assert callable(edgeft.train) and edgeft.Bundle.__name__ == "Bundle"
print(sorted(m for m in ('torch', 'transformers', 'edgeft.exporting') if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['edgeft'] True", lines  # only edgeft itself: no onnxruntime stubs, no env, no logging
    assert lines[1] == "[]"  # the API's device side loads on use; the host side only when exporting


def test_the_api_keeps_onnx_runtimes_warnings_to_itself(tiny_bert, tmp_path):
    """Export of a model with dropout makes sessions that ONNX Runtime warns about (unused dropout
    constants): an API caller sees none of it on stderr, as a CLI user does not."""
    code = (f"import edgeft\nedgeft.export({str(tiny_bert)!r}, labels=['a', 'b', 'c'], train='last:1', "
            f"output={str(tmp_path / 'a')!r})\nprint('done')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
    assert "onnxruntime" not in out.stderr, out.stderr[-2000:]
