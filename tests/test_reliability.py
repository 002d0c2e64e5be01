"""Faults must not lose work, and files edgeft did not write must not harm it.

- SIGKILL at seeded random moments during ``edgeft train`` (and while it resumes), with both
  training backends: every checkpoint on disk loads, every ``--resume`` continues from the newest
  checkpoint (not from scratch), and it ends with the uninterrupted run's result, bit for bit.
- A full disk during checkpoint, export and deploy: one clear error, the previous checkpoint,
  artifact folder or bundle byte-identical, nothing half-written left behind.
- Integrity and safety: every file is checked against its manifest sha256 before use, paths
  cannot leave their folder, nothing is ever unpickled.
- Numerical faults: NaN or infinite inputs are refused, a diverging learning rate stops the run
  with a clear message and keeps the last good checkpoint.

CI runs EDGEFT_KILLS kills per backend (default 3, at moments drawn from the run's seed, see
reliability_fuzz.run_seed) and one disk-full case per operation; tools/reliability.py runs the
full counts and prints the reliability report.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ORT
from edgeft.errors import EdgeftError
from reliability_faults import (SmallDisk, TrainJob, changed, checkpoint_case, disk_full_case, failed_cleanly,
                                free_levels, kill_trials, reference_run, run_edgeft, snapshot)
from reliability_fuzz import run_seed
from test_train import LABELS, dataset, write_csv

KILLS = int(os.environ.get("EDGEFT_KILLS", "3"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifacts(tiny_bert, export_cache) -> Path:
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder  # dropout on


@pytest.fixture(scope="module")
def job(artifacts, tmp_path_factory) -> TrainJob:
    root = tmp_path_factory.mktemp("faults")
    return TrainJob(artifacts, write_csv(root / "train.csv", dataset(2, 60)), root)


@pytest.fixture(scope="module")
def reference(job):
    return reference_run(job)


@pytest.fixture(scope="module")
def val_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("val") / "val.csv", dataset(1, 4))


@pytest.fixture(scope="module")
def bundle(artifacts, val_csv, tmp_path_factory) -> Path:
    from edgeft.deployment.pipeline import DeployOptions, deploy

    output = tmp_path_factory.mktemp("bundle") / "bundle"
    return Path(deploy(DeployOptions(source=artifacts, device="raspberry-pi-5", val=val_csv, output=output))["bundle"])


# ---- SIGKILL ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [ORT, "portable"])
def test_sigkill_at_random_moments_never_loses_work(job, reference, backend, tmp_path):
    if backend != job.backend:
        job = TrainJob(job.artifacts, job.data, tmp_path, backend=backend)
        reference = reference_run(job)
    report = kill_trials(job, KILLS, seed=run_seed(), reference=reference)
    assert report.kills >= KILLS, report
    assert report.lost == [] and report.crashed == [], report


def test_a_run_killed_between_the_renames_of_a_replace_gets_its_best_checkpoint_back(tmp_path):
    from edgeft.run import checkpoints

    run = tmp_path / "run"
    (run / ".best.old-4242").mkdir(parents=True)  # the previous best, moved aside; the new one never arrived
    (run / ".best.old-4242" / "state.json").write_text("{}")
    (run / ".best.x1y2.partial").mkdir()
    (run / checkpoints.CHECKPOINTS / ".step-00000007.ab12.partial").mkdir(parents=True)
    checkpoints.prune(run, keep=2)
    assert sorted(p.name for p in run.iterdir()) == ["best", "checkpoints"]
    assert (run / "best" / "state.json").read_text() == "{}"
    assert list((run / checkpoints.CHECKPOINTS).iterdir()) == []


# ---- a full disk -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    with SmallDisk(tmp_path_factory.mktemp("small-disk")) as disk:
        yield disk


def test_full_disk_during_a_checkpoint(disk, job, reference):
    case = checkpoint_case(disk, job, reference, free=8 << 10)
    assert case.triggered, case
    assert not case.unclear and case.lost == [], case
    assert case.after == "--resume after freeing space gave the uninterrupted result", case


def test_full_disk_during_export(disk, tiny_bert, artifacts, tmp_path):
    target = disk.path / "artifacts"
    shutil.copytree(artifacts, target)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    args = ["export", str(tiny_bert), "--labels", str(labels), "--train", "last:1", "-o", str(target), "--force"]
    for free in free_levels(disk, target, (0.4,)):
        case = disk_full_case(disk, "export", free, args, target, tmp_path, device_side=False)
        assert case.triggered and not case.unclear and case.lost == [], case
    shutil.rmtree(target)


def test_full_disk_during_deploy(disk, artifacts, bundle, val_csv, tmp_path):
    target = disk.path / "bundle"
    shutil.copytree(bundle, target)
    args = ["deploy", str(artifacts), "--device", "raspberry-pi-5", "--val", str(val_csv), "-o", str(target), "--force"]
    for free in free_levels(disk, target, (0.4,)):
        case = disk_full_case(disk, "deploy", free, args, target, tmp_path)
        assert case.triggered and not case.unclear and case.lost == [], case
    shutil.rmtree(target)


# ---- integrity: hashes and paths -----------------------------------------------------------------------------


def test_every_tampered_or_truncated_artifact_file_is_refused_before_use(artifacts, tmp_path):
    from edgeft.training.loop import DataOptions, TrainConfig, train

    folder = tmp_path / "copy"
    shutil.copytree(artifacts, folder)
    data = write_csv(tmp_path / "d.csv", dataset(0, 4))
    files = json.loads((folder / "manifest.json").read_text())["files"]
    assert len(files) >= 8
    for entry in files.values():
        path = folder / entry["path"]
        original = path.read_bytes()
        for damaged in (original[:-1], bytes([original[0] ^ 1]) + original[1:]):  # truncated, one bit flipped
            path.write_bytes(damaged)
            with pytest.raises(EdgeftError, match=f"{entry['path']} was modified"):
                train(folder, DataOptions(train=data), tmp_path / "run", TrainConfig(epochs=1))
            assert not (tmp_path / "run").exists()
        path.write_bytes(original)
    path.unlink()
    out = run_edgeft(["train", str(folder), str(data), "--run-dir", str(tmp_path / "run")], tmp_path)
    assert not failed_cleanly(out) and f"{entry['path']} is missing" in out.stderr


def test_every_tampered_or_truncated_bundle_file_is_refused_before_use(bundle, tmp_path):
    from edgeft.deployment.bundle import Bundle

    folder = tmp_path / "copy"
    shutil.copytree(bundle, folder)
    for entry in json.loads((folder / "manifest.json").read_text())["files"].values():
        path = folder / entry["path"]
        original = path.read_bytes()
        for damaged in (original[:-1], original[:-1] + bytes([original[-1] ^ 0x80])):
            path.write_bytes(damaged)
            with pytest.raises(EdgeftError, match=f"{entry['path']} was modified"):
                Bundle(folder)
        path.write_bytes(original)
    out = run_edgeft(["predict", str(folder), "turn on the lights"], tmp_path)
    assert out.returncode == 0, out.stderr


def test_a_damaged_run_record_or_checkpoint_state_is_a_clear_error(job, reference, tmp_path):
    from edgeft.run import checkpoints
    from edgeft.training.loop import DataOptions, TrainConfig, train

    run = tmp_path / "run"
    config = TrainConfig(epochs=1, batch_size=8, checkpoint_every=2, seed=5)
    train(job.artifacts, DataOptions(train=job.data), run, config, threads=1)
    state = checkpoints.latest(run) / checkpoints.STATE
    for damaged, where in ((b"\xff\xfe not json", state), (b"[1, 2]", state), (b'{"epoch": ', run / "run.json")):
        original = where.read_bytes()
        where.write_bytes(damaged)
        with pytest.raises(EdgeftError) as info:
            train(job.artifacts, DataOptions(train=job.data), run, config, threads=1, resume=True)
        assert info.value.where == str(where) and info.value.hint
        where.write_bytes(original)


@pytest.mark.parametrize("field, value, message", [
    (("files", "labels", "path"), "../labels.txt", "points outside its folder"),
    (("files", "labels", "path"), "/etc/passwd", "invalid file path"),
    (("preprocessing", "file"), "../tokenizer.json", "not a file listed in the manifest"),
    (("format_version",), 2, "newer than this edgeft reads"),
    (("task",), "ranking", 'field task is "ranking", which is not allowed'),
    (("inputs",), [{"name": "input_ids"}], "field inputs[0].dtype is missing"),
    (("labels", "input", "dtype"), "float32", "the cross-entropy loss needs 'int64'"),
])
def test_a_hand_edited_manifest_is_refused_naming_the_field(artifacts, tmp_path, field, value, message):
    folder = tmp_path / "copy"
    shutil.copytree(artifacts, folder)
    (tmp_path / "labels.txt").write_text("outside\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    parent = manifest
    for key in field[:-1]:
        parent = parent[key]
    parent[field[-1]] = value
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = write_csv(tmp_path / "d.csv", dataset(0, 4))
    for args in (["train", str(folder), str(data), "--run-dir", str(tmp_path / "run")], ["inspect", str(folder)],
                 ["verify", str(folder)]):
        out = run_edgeft(args, tmp_path)
        assert not failed_cleanly(out), out.stderr
        assert message in out.stderr and str(folder) in out.stderr
    assert not (tmp_path / "run").exists()


# ---- safety: nothing is unpickled ----------------------------------------------------------------------------


class Payload:
    """Unpickling this object creates a marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_npz_with_a_pickled_object_is_refused_without_unpickling(tmp_path):
    from edgeft.data.records import read_records
    from test_data import manifest

    marker = tmp_path / "pwned"
    np.savez(tmp_path / "evil.npz", x=np.zeros((2, 4)), labels=np.array([Payload(marker), 1], dtype=object))
    with pytest.raises(EdgeftError, match="evil.npz is not a readable .npz file") as info:
        read_records(tmp_path / "evil.npz", manifest(modality="tensor"))
    assert "Object arrays cannot be loaded" in str(info.value) and info.value.hint
    assert not marker.exists()


def test_pickled_pytorch_weights_are_not_executed(tiny_bert, tmp_path):
    import torch

    from edgeft.exporting.artifacts import ExportOptions, export_artifacts

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "pwned"
    torch.save({"embeddings.word_embeddings.weight": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(EdgeftError, match="transformers could not load the model"):
        export_artifacts(ExportOptions(model=str(folder), label_names=LABELS, output=tmp_path / "out"))
    assert not marker.exists() and not (tmp_path / "out").exists()


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            found.append((f"{owner}.{name}" if owner else name, node))
    return found


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def test_the_code_never_loads_pickles_or_unsafe_yaml():
    problems = []
    for path in sorted((REPO / "edgeft").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        place = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal") for n in names):
                    problems.append(f"{place}:{node.lineno} imports a pickle module")
        for name, call in _calls(tree):
            if name == "np.load" and _keyword(call, "allow_pickle") is not False:
                problems.append(f"{place}:{call.lineno} np.load without allow_pickle=False")
            if name == "torch.load" and _keyword(call, "weights_only") is not True:
                problems.append(f"{place}:{call.lineno} torch.load without weights_only=True")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load") and "Safe" not in ast.unparse(call):
                problems.append(f"{place}:{call.lineno} {name} (use yaml.safe_load)")
            if name in ("eval", "exec") and isinstance(call.func, ast.Name):  # the builtins, not module.eval()
                problems.append(f"{place}:{call.lineno} {name}()")
    assert problems == []


# ---- numerical faults ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_artifacts(export_cache) -> Path:
    return export_cache(model="models:mlp", inputs=["x:float32:batch,8"], train="last:1", loss="mse",
                        optimizer="sgd").folder


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_inputs_are_refused_naming_the_example(mlp_artifacts, tmp_path, bad):
    x = np.zeros((6, 8), np.float32)
    x[4, 3] = bad
    np.savez(tmp_path / "d.npz", x=x, labels=np.zeros((6, 3), np.float32))
    out = run_edgeft(["train", str(mlp_artifacts), str(tmp_path / "d.npz"), "--weight-decay", "0", "--run-dir",
                      str(tmp_path / "run")], tmp_path)
    assert not failed_cleanly(out), out.stderr
    assert "d.npz[4] holds NaN or infinite values" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_diverging_learning_rate_stops_the_run_and_keeps_the_last_good_checkpoint(mlp_artifacts, tmp_path):
    from edgeft.run import checkpoints
    from edgeft.evaluation.evaluate import checkpoint_parameters

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((64, 8)).astype(np.float32),
             labels=(1e3 * rng.standard_normal((64, 3))).astype(np.float32))
    run = tmp_path / "run"
    args = ["train", str(mlp_artifacts), str(tmp_path / "d.npz"), "--run-dir", str(run), "--epochs", "50",
            "--batch-size", "8", "--lr", "10", "--warmup", "0", "--weight-decay", "0", "--val-fraction", "0",
            "--checkpoint-every", "1", "--threads", "1"]
    out = run_edgeft(args, tmp_path)
    assert not failed_cleanly(out), out.stderr
    assert "error: Training diverged" in out.stderr and "lower --lr" in out.stderr
    kept = checkpoints.listed(run)
    assert kept, "the last good checkpoint is kept"
    before = snapshot(run)
    params = checkpoint_parameters(kept[-1])
    assert params and all(np.isfinite(v).all() for v in params.values())
    resumed = run_edgeft([*args, "--resume"], tmp_path)  # the same divergence again, and nothing changed
    assert "Training diverged" in resumed.stderr and not failed_cleanly(resumed)
    assert changed(before, snapshot(run)) == []


def test_reliability_tool_offers_the_full_counts():
    import subprocess

    out = subprocess.run([sys.executable, str(REPO / "tools" / "reliability.py"), "--help"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0 and "--kills" in out.stdout and "--fuzz" in out.stdout
