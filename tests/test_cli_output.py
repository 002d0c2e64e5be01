"""Where the command line writes: results on stdout (so `edgeft predict B "text" > out.txt` and
`edgeft devices | grep pi` work), progress, notes and warnings on stderr, and with --json nothing
but one JSON document on stdout, errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability_faults import run_edgeft
from test_train import LABELS, dataset, write_csv


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("output")


@pytest.fixture(scope="module")
def artifacts(tiny_bert, export_cache) -> Path:
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder


@pytest.fixture(scope="module")
def data(root) -> tuple[Path, Path]:
    rows = dataset(0, 8)
    rows.insert(3, ("a row without a label", ""))
    return write_csv(root / "train.csv", rows), write_csv(root / "val.csv", dataset(1, 4))


@pytest.fixture(scope="module")
def run(artifacts, data, root) -> Path:
    out = run_edgeft(["train", artifacts, data[0], "--val", data[1], "--epochs", "1", "--run-dir", root / "run"], root)
    assert out.returncode == 0, out.stderr
    return root / "run"


@pytest.fixture(scope="module")
def bundle(run, root) -> Path:
    out = run_edgeft(["deploy", run, "--device", "raspberry-pi-5", "-o", root / "bundle"], root)
    assert out.returncode == 0, out.stderr
    return root / "bundle"


def test_results_go_to_stdout_and_progress_to_stderr(artifacts, data, run, bundle, tiny_onnx, root, tmp_path):
    cases = [  # (command, device side, a piece of the result, a piece of the progress or notes or None)
        (["devices"], True, "raspberry-pi-5", None),
        (["devices", "raspberry-pi-5"], True, "profile is valid", None),
        (["inspect", bundle], True, "model.onnx", None),
        (["verify", bundle], True, "bundle model loads in onnxruntime", None),
        (["predict", bundle, "turn on the lights"], True, "turn on the lights", None),
        (["evaluate", bundle, data[1]], True, "accuracy", None),
        (["bench", bundle, "--batch", "1", "--warmup", "0", "--iterations", "2"], True, "p50 ms", None),
        (["train", artifacts, data[0], "--val", data[1], "--epochs", "1", "--run-dir", tmp_path / "run"], True,
         "Fine-tuning summary", "before training"),
        (["deploy", run, "--device", "raspberry-pi-5", "-o", tmp_path / "bundle"], True, "Bundle written to", None),
        (["export", tiny_onnx, "--train", "head", "-o", tmp_path / "art"], False, "Training artifacts written to",
         "frozen-prefix cache"),
    ]
    for args, device_side, result, progress in cases:
        out = run_edgeft(args, root, device_side=device_side)
        assert out.returncode == 0, (args, out.stderr)
        assert result in out.stdout and result not in out.stderr, (args, out.stdout, out.stderr)
        if progress:
            assert progress in out.stderr and progress not in out.stdout, (args, out.stdout, out.stderr)


def test_json_is_one_json_document_on_stdout_with_one_shape(artifacts, data, bundle, root, tmp_path):
    for args, check in [
        (["devices"], lambda doc: any(p["name"] == "raspberry-pi-5" for p in doc)),
        (["inspect", bundle], lambda doc: doc["verified"] is True),
        (["verify", bundle], lambda doc: [r["ok"] for r in doc] == [True]),  # a list for one folder too
        (["predict", bundle, "turn on the lights"], lambda doc: [p["input"] for p in doc] == ["turn on the lights"]),
        (["predict", bundle, "turn on the lights", "play music"], lambda doc: len(doc) == 2),
        (["evaluate", bundle, data[1]], lambda doc: 0 <= doc["accuracy"] <= 1),
        (["train", artifacts, data[0], "--val", data[1], "--epochs", "1", "--run-dir", tmp_path / "run"],
         lambda doc: doc["skipped_rows"] == [f"{data[0]}:5: missing label"]),
    ]:
        out = run_edgeft([*args, "--json"], root)
        assert out.returncode == 0, (args, out.stderr)
        assert check(json.loads(out.stdout)), (args, out.stdout)


@pytest.mark.parametrize("args, code, what", [
    (["predict", "no-such-bundle", "hello"], 1, "no-such-bundle is not a folder"),
    (["train", "no-such-artifacts", "data.csv"], 1, "no-such-artifacts is not a folder"),
    (["predict", "b", "x", "--top-k", "0"], 2, "Invalid value for '--top-k'"),
])
def test_errors_under_json_are_a_json_object_on_stdout(args, code, what, root):
    out = run_edgeft([*args, "--json"], root)
    assert out.returncode == code, out.stderr
    error = json.loads(out.stdout)["error"]
    assert what in error["what"] and error["where"] and error["hint"]
    assert "Traceback" not in out.stderr and what in out.stderr  # and a person still reads it on stderr
    plain = run_edgeft(args, root)
    assert plain.returncode == code and plain.stdout == ""


def test_verify_checks_and_reports_every_folder(artifacts, bundle, root, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    out = run_edgeft(["verify", bundle, broken, artifacts], root)
    assert out.returncode == 1
    assert f"✓ {bundle}" in out.stdout and f"✓ {artifacts}" in out.stdout and f"✗ {broken}" in out.stdout
    assert "error: " in out.stderr and "has no manifest.json" in out.stderr
    results = json.loads(run_edgeft(["verify", bundle, broken, artifacts, "--json"], root).stdout)
    assert [r["ok"] for r in results] == [True, False, True]
    assert "has no manifest.json" in results[1]["error"]["what"]


def test_predict_refuses_a_missing_file_instead_of_predicting_its_name(bundle, root):
    missing = run_edgeft(["predict", bundle, "nosuch.csv"], root)
    assert missing.returncode == 1 and "The file nosuch.csv does not exist" in missing.stderr
    assert "--text" in missing.stderr and missing.stdout == ""
    folder = run_edgeft(["predict", bundle, root], root)
    assert folder.returncode == 1 and "is a folder, but this bundle reads texts" in folder.stderr
    as_text = run_edgeft(["predict", bundle, "--text", "nosuch.csv", "--json"], root)
    assert as_text.returncode == 0, as_text.stderr
    assert [p["input"] for p in json.loads(as_text.stdout)] == ["nosuch.csv"]
    (root / "rows.csv").write_text("text\nturn on the lights\nplay, then stop\n")
    rows = run_edgeft(["predict", bundle, root / "rows.csv", "--json"], root)
    assert [p["input"] for p in json.loads(rows.stdout)] == ["turn on the lights"]
    assert f"skipped {root / 'rows.csv'}:3: 2 fields, but the header has 1" in rows.stderr
