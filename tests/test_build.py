"""edgeft build: reproducible bytes, skipping unchanged builds, clear file errors; edgeft verify."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeft.buildfile import read_build_file, run_builds
from edgeft.errors import EdgeftError
from edgeft.verify import verify_folder

TESTS = Path(__file__).resolve().parent


@pytest.fixture()
def project(tmp_path, tiny_onnx) -> Path:
    shutil.copy(tiny_onnx, tmp_path / "mlp.onnx")
    shutil.copy(TESTS / "models.py", tmp_path / "nets.py")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    (tmp_path / "edgeft.toml").write_text('''
[[build]]
name = "onnx-head"
model = "mlp.onnx"
labels = "labels.txt"
train = "head"
l2sp = 0.01

[[build]]
name = "torch-last"
model = "nets.py:mlp"
inputs = ["x:float32:batch,8"]
train = "last:1"
loss = "cross-entropy"
optimizer = "sgd"
''')
    return tmp_path


def shas(report: dict) -> dict:
    return {b["name"]: b["files"] for b in report["builds"]}


def written(report: dict) -> dict[str, tuple[int, int]]:
    """Inode and modification time of every output file: a rebuild writes new files (renamed into
    place), a skipped build touches none."""
    folders = [Path(b["output"]) for b in report["builds"]]
    folders += [Path(out["output"]) for b in report["builds"] for key in ("packages", "bundles") for out in b.get(key, [])]
    return {str(path): (path.stat().st_ino, path.stat().st_mtime_ns)
            for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


def test_two_builds_are_byte_identical_and_unchanged_ones_skip(project):
    first = run_builds(project / "edgeft.toml")
    assert [b["status"] for b in first["builds"]] == ["built", "built"]
    onnx_files = [k for k in first["builds"][1]["files"] if "model" in k or "portable" in k]
    assert len(onnx_files) >= 6  # forward and prefix models, the tail's step / eval graphs, optimizer, checkpoint
    first_files = written(first)
    forced = run_builds(project / "edgeft.toml", force=True)
    assert shas(forced) == shas(first)  # rebuilt from scratch: the same sha256 for every file
    before = written(forced)
    assert before.keys() == first_files.keys() and all(before[k] != first_files[k] for k in before)  # rewritten
    skipped = run_builds(project / "edgeft.toml")
    assert [b["status"] for b in skipped["builds"]] == ["skipped", "skipped"]
    assert shas(skipped) == shas(first)
    assert written(skipped) == before  # nothing was written again
    # a changed label file changes only that build's key
    (project / "labels.txt").write_text("a\nb\nz\n")
    changed = run_builds(project / "edgeft.toml")
    assert [b["status"] for b in changed["builds"]] == ["built", "skipped"]


def test_verify_catches_a_changed_byte_in_any_file(project, tmp_path):
    report = run_builds(project / "edgeft.toml", only=["onnx-head"])
    folder = Path(report["builds"][0]["output"])
    assert verify_folder(folder)["ok"]
    for entry in json.loads((folder / "manifest.json").read_text())["files"].values():
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(folder, copy)
        target = copy / entry["path"]
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        with pytest.raises(EdgeftError, match=f"{entry['path']} was modified"):
            verify_folder(copy)
    out = subprocess.run([sys.executable, "-m", "edgeft", "verify", str(copy)], capture_output=True, text=True)
    assert out.returncode == 1 and "was modified" in out.stderr


def test_build_file_errors_name_build_and_field(tmp_path):
    cases = {
        '[[build]]\nname = "x"\ntrian = "head"\n': ("Unknown field trian; did you mean train?", "field trian"),
        '[[build]]\nname = "x"\nseed = "1"\n': ('seed must be an integer, found string "1"', "build #1 (x), field seed"),
        '[[build]]\nname = "x"\nformats = ["portable", 2]\n': ("formats must be an array of strings, item 1 is integer 2",
                                                            'formats = ["portable"]'),
        '[[build]]\nmodel = "minilm"\n': ("The required field name is missing", 'add name = "intents" to the [[build]]'),
        'build = [1]\n': ("build #1 is not a table", "build #1"),
        '[[build]]\nname = "x"\n[[build]]\nname = "x"\n': ("Two builds are named 'x'", "build #2"),
        '[[build]]\nname = "x"\ndevices = ["raspberry-pi-5"]\n': ("need validation data", "field val"),
        'name = "x"\n': ("Unknown top-level key", "edgeft.toml"),
        '[[build]\n': ("cannot be read", "edgeft.toml"),
    }
    for text, (what, where) in cases.items():
        path = tmp_path / "edgeft.toml"
        path.write_text(text)
        with pytest.raises(EdgeftError) as info:
            read_build_file(path)
        assert what in info.value.what, text
        assert where in (info.value.where or "") + " " + (info.value.hint or ""), text


def test_build_cli_json_and_report(project):
    out = subprocess.run([sys.executable, "-m", "edgeft", "build", str(project / "edgeft.toml"), "--only", "onnx-head",
                          "--json", "--report", str(project / "report.json")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["built"] == 1 and report["builds"][0]["name"] == "onnx-head"
    assert json.loads((project / "report.json").read_text()) == report


def test_the_example_build_file_rebuilds_byte_identical_and_skips(tmp_path):
    """The project's own edgeft.toml (MiniLM, a device package, two device bundles), as CI would run it."""
    root = TESTS.parent
    shutil.copy(root / "edgeft.toml", tmp_path / "edgeft.toml")
    shutil.copytree(root / "edgeft" / "examples" / "smart_home", tmp_path / "edgeft" / "examples" / "smart_home")
    first = run_builds(tmp_path / "edgeft.toml")
    assert [b["status"] for b in first["builds"]] == ["built"]
    assert [b["status"] for b in first["builds"][0]["bundles"]] == ["built", "built"]
    assert [p["status"] for p in first["builds"][0]["packages"]] == ["built"]
    forced = run_builds(tmp_path / "edgeft.toml", force=True)
    assert shas(forced) == shas(first)  # every artifact file, sha256 for sha256
    assert forced["builds"][0]["packages"] == first["builds"][0]["packages"]  # the package too, file for file
    assert verify_folder(Path(first["builds"][0]["packages"][0]["output"]))["ok"]
    measured = {"report", "report_text"}  # latency figures differ run to run; everything else may not
    for before, after in zip(first["builds"][0]["bundles"], forced["builds"][0]["bundles"]):
        assert after["status"] == "built"
        assert {k: v for k, v in after["files"].items() if k not in measured} == \
               {k: v for k, v in before["files"].items() if k not in measured}
        assert verify_folder(Path(after["output"]))["ok"]
    before = written(forced)
    skipped = run_builds(tmp_path / "edgeft.toml")
    assert [b["status"] for b in skipped["builds"][0]["bundles"]] == ["skipped", "skipped"]
    assert [p["status"] for p in skipped["builds"][0]["packages"]] == ["skipped"]
    assert skipped["builds"][0]["status"] == "skipped" and shas(skipped) == shas(first)
    assert written(skipped) == before  # nothing was exported, trained or deployed again


def test_a_folder_of_class_subfolders_as_validation_data_enters_the_build_key(tmp_path):
    """val / guard_data may be a folder (images, WAV files): its files' contents make the key."""
    from edgeft.buildfile import BuildEntry, build_key

    (tmp_path / "clips" / "yes").mkdir(parents=True)
    clip = tmp_path / "clips" / "yes" / "a.wav"
    clip.write_bytes(b"one")
    entry = BuildEntry(name="kws", model="minilm", val="clips")
    before = build_key(entry, tmp_path)
    assert build_key(entry, tmp_path) == before
    clip.write_bytes(b"two")
    assert build_key(entry, tmp_path) != before
