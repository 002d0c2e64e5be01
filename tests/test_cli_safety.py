"""The command line never loses a user's files, and fails like a well-mannered tool.

- ``--force`` replaces only a folder edgeft wrote, of the kind being written (an artifact folder,
  a bundle, a run); any other folder is refused with or without --force and stays byte-identical,
  and the message never suggests --force for it.
- Every OS error on an output path (a read-only disk, a file in the way, a run folder that
  vanishes while it trains) is one clear message and exit 1; Ctrl-C exits 130, keeps the run's
  checkpoints and says that --resume continues it (to the uninterrupted result, bit for bit).
- What edgeft writes honours the umask, as cp and pip do, while every write stays atomic.

Every edgeft process is the real CLI in a fresh interpreter (device-side commands with torch blocked).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from reliability_faults import (TrainJob, can_mount_tmpfs, changed, differences, failed_cleanly, leftovers,
                                reference_run, run_edgeft, run_result, snapshot, wait_for)
from test_train import LABELS, dataset, write_csv


@pytest.fixture(scope="module")
def artifacts(tiny_bert, export_cache) -> Path:
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("safety")


@pytest.fixture(scope="module")
def data(root) -> tuple[Path, Path]:
    return write_csv(root / "train.csv", dataset(0, 8)), write_csv(root / "val.csv", dataset(1, 4))


@pytest.fixture(scope="module")
def run(artifacts, data, root) -> Path:
    folder = root / "run"
    out = run_edgeft(["train", artifacts, data[0], "--val", data[1], "--epochs", "1", "--run-dir", folder], root)
    assert out.returncode == 0, out.stderr
    return folder


@pytest.fixture(scope="module")
def bundle(run, root) -> Path:
    folder = root / "bundle"
    out = run_edgeft(["deploy", run, "--device", "raspberry-pi-5", "-o", folder], root)
    assert out.returncode == 0, out.stderr
    return folder


def users_folder(path: Path) -> Path:
    """A folder of the user's own: a project with a source file, a data file and a subfolder."""
    (path / "src").mkdir(parents=True)
    (path / "src" / "main.py").write_text("print('my work')\n")
    (path / "notes.csv").write_text("text,label\nmine,mine\n")
    return path


def commands(kind: str, dest: str, artifacts: Path, data: tuple[Path, Path], run: Path, tiny_onnx: Path) -> list[str]:
    """The command that writes ``kind`` into ``dest``, with --force."""
    return {"artifacts": ["export", str(tiny_onnx), "--train", "head", "-o", dest, "--force"],
            "bundle": ["deploy", str(run), "--device", "raspberry-pi-5", "-o", dest, "--force"],
            "run": ["train", str(artifacts), str(data[0]), "--epochs", "1", "--run-dir", dest, "--force"]}[kind]


def what_to_do(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("  what to do: "))


# ---- 1. --force replaces only edgeft's own folders ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["artifacts", "bundle", "run"])
@pytest.mark.parametrize("dest", ["project", "."])
def test_force_never_replaces_a_folder_edgeft_did_not_write(kind, dest, artifacts, data, run, tiny_onnx, tmp_path):
    project = users_folder(tmp_path / "project")
    before = snapshot(project)
    cwd = project if dest == "." else tmp_path
    out = run_edgeft(commands(kind, dest, artifacts, data, run, tiny_onnx), cwd, device_side=kind != "artifacts")
    assert not failed_cleanly(out), failed_cleanly(out)
    assert "holds files edgeft did not write" in out.stderr
    assert "--force" not in what_to_do(out.stderr)
    assert changed(before, snapshot(project)) == [] and leftovers(project) == []


@pytest.mark.parametrize("kind, other", [("artifacts", "run"), ("bundle", "artifacts"), ("run", "bundle")])
def test_force_never_replaces_an_edgeft_folder_of_another_kind(kind, other, artifacts, data, run, bundle, tiny_onnx,
                                                              tmp_path):
    target = tmp_path / "target"
    shutil.copytree({"artifacts": artifacts, "bundle": bundle, "run": run}[other], target)
    before = snapshot(target)
    out = run_edgeft(commands(kind, str(target), artifacts, data, run, tiny_onnx), tmp_path,
                     device_side=kind != "artifacts")
    assert not failed_cleanly(out), failed_cleanly(out)
    assert "so edgeft will not replace it" in out.stderr
    assert changed(before, snapshot(target)) == []


def test_train_tells_a_run_from_a_folder_of_the_users(artifacts, data, run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text('{"my": "own run record"}\n')  # not edgeft's, whatever its name
    out = run_edgeft(["train", artifacts, data[0], "--epochs", "1", "--run-dir", mine], tmp_path)
    assert not failed_cleanly(out) and "holds files edgeft did not write" in out.stderr
    assert "already holds a run" not in out.stderr and "--force" not in what_to_do(out.stderr)
    assert (mine / "run.json").read_text() == '{"my": "own run record"}\n'

    again = tmp_path / "again"
    shutil.copytree(run, again)
    out = run_edgeft(["train", artifacts, data[0], "--epochs", "1", "--run-dir", again], tmp_path)
    assert not failed_cleanly(out) and "holds a run written by edgeft" in out.stderr
    assert "--resume" in what_to_do(out.stderr) and "--force" in what_to_do(out.stderr)
    out = run_edgeft(["train", artifacts, data[0], "--epochs", "1", "--run-dir", again, "--force", "--json"], tmp_path)
    assert out.returncode == 0, out.stderr


def test_run_records_are_recognised_by_their_content_in_either_layout(tmp_path):
    from edgeft.outputs import edgeft_kind

    cases = {"paths as given": {"artifacts": "artifacts/minilm", "manifest_sha256": "ab12", "config": {}},
             "relative to the run": {"format": 2, "artifacts": {"path": "../minilm", "absolute": "/x/minilm",
                                                                "manifest_sha256": "ab12"}},
             "a user's own": {"artifacts": "mine"}, "not an object": [1, 2]}
    (tmp_path / "package").mkdir()  # a manifest of any kind edgeft writes, e.g. a kind this version does not know
    (tmp_path / "package" / "manifest.json").write_text('{"kind": "package", "format_version": 1, "files": {}}')
    assert edgeft_kind(tmp_path / "package") == "package"
    for name, record in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps(record))
        assert edgeft_kind(folder) == ("run" if name in ("paths as given", "relative to the run") else None), name


# ---- 2. OS errors, a vanishing run folder, Ctrl-C -------------------------------------------------------------


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only file system with an empty folder on it (a tmpfs remounted read-only; needs root)."""
    base = tmp_path_factory.mktemp("ro")
    if not can_mount_tmpfs(base / "probe"):
        pytest.skip("mounting a tmpfs needs root")
    mount = base / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    (mount / "empty").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("kind", ["artifacts", "bundle", "run"])
@pytest.mark.parametrize("place", ["a file in the way", "read-only, new folder", "read-only, empty folder"])
def test_an_unwritable_output_path_is_one_clear_message(kind, place, request, artifacts, data, run, tiny_onnx,
                                                        tmp_path):
    if place == "a file in the way":
        (tmp_path / "file").write_text("mine\n")
        dest, reason = tmp_path / "file" / "out", "is a file, not a folder"
    else:
        disk = request.getfixturevalue("read_only")
        dest, reason = disk / ("new" if "new" in place else "empty"), "the file system is read-only"
    args = [a for a in commands(kind, str(dest), artifacts, data, run, tiny_onnx) if a != "--force"]
    out = run_edgeft(args, tmp_path, device_side=kind != "artifacts")
    assert not failed_cleanly(out), failed_cleanly(out)
    assert reason in what_to_do(out.stderr) and str(dest) in out.stderr


@pytest.fixture(scope="module")
def job(artifacts, root) -> TrainJob:
    folder = root / "job"
    folder.mkdir()
    return TrainJob(artifacts, write_csv(folder / "train.csv", dataset(2, 40)), folder,
                    options=("--epochs", "6", "--batch-size", "2", "--checkpoint-every", "5", "--threads", "1",
                             "--seed", "5"))


def first_checkpoint(run_dir: Path):
    from edgeft.run import checkpoints

    return lambda: bool(checkpoints.listed(run_dir))


def test_a_run_folder_that_vanishes_while_training_is_an_error_not_a_success(job):
    run_dir = job.root / "vanishing"
    process = job.start(run_dir)
    assert wait_for(first_checkpoint(run_dir), process), process.communicate()[1]
    moved = job.root / "moved-away"
    os.replace(run_dir, moved)
    _, err = process.communicate(timeout=600)
    out = subprocess.CompletedProcess(process.args, process.returncode, "", err)
    assert not failed_cleanly(out), failed_cleanly(out)
    assert str(run_dir) in err
    # the check before each write; a move in the middle of one is the catch-all's clear message
    assert any(m in err for m in ("disappeared while training", "could not be used", "was moved or removed while")), \
        err[-1000:]
    assert not (run_dir / "summary.json").exists()


def test_ctrl_c_keeps_the_checkpoints_and_says_resume_continues(job):
    reference = reference_run(job)
    run_dir = job.root / "interrupted"
    process = job.start(run_dir)
    assert wait_for(first_checkpoint(run_dir), process), process.communicate()[1]
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "error: Interrupted; the run folder keeps its last checkpoint" in err
    assert "--resume" in what_to_do(err)
    resumed = run_edgeft(job.args(run_dir, resume=True), job.root)
    assert resumed.returncode == 0, resumed.stderr
    assert differences(reference.result, run_result(run_dir)) == []


# ---- 3. the umask ---------------------------------------------------------------------------------------------


def modes(folder: Path) -> set[tuple[str, int]]:
    """("dir" or "file", permission bits) of ``folder`` and everything in it."""
    found = {("dir", stat.S_IMODE(folder.stat().st_mode))}
    for path in folder.rglob("*"):
        found.add(("dir" if path.is_dir() else "file", stat.S_IMODE(path.stat().st_mode)))
    return found


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_folders_and_files_honour_the_umask(umask, artifacts, data, tiny_onnx, tmp_path):
    def with_umask() -> None:
        os.umask(umask)

    expected = {("dir", 0o777 & ~umask), ("file", 0o666 & ~umask)}
    exported = run_edgeft(["export", tiny_onnx, "--train", "head", "-o", tmp_path / "art"], tmp_path,
                          device_side=False, preexec=with_umask)
    assert exported.returncode == 0, exported.stderr
    assert modes(tmp_path / "art") == expected
    trained = run_edgeft(["train", artifacts, data[0], "--val", data[1], "--epochs", "1", "--run-dir",
                          tmp_path / "run"], tmp_path, preexec=with_umask)
    assert trained.returncode == 0, trained.stderr
    assert modes(tmp_path / "run") == expected
    deployed = run_edgeft(["deploy", tmp_path / "run", "--device", "raspberry-pi-5", "-o", tmp_path / "bundle"],
                          tmp_path, preexec=with_umask)
    assert deployed.returncode == 0, deployed.stderr
    assert modes(tmp_path / "bundle") == expected
