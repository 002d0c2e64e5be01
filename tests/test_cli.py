"""The command line as a user runs it: help, JSON output, errors without tracebacks, inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(TESTS), COLUMNS="120")
    return subprocess.run([sys.executable, "-m", "edgeft", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_help_lists_commands_and_every_command_has_examples():
    top = run("--help")
    assert top.returncode == 0 and "export" in top.stdout and "inspect" in top.stdout
    from edgeft.cli import COMMANDS

    for name in COMMANDS:
        sub = run(name, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "Examples:" in sub.stdout


def test_help_does_not_import_torch():
    code = "import sys; from edgeft.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False")


def test_export_json_and_inspect(tiny_onnx, tmp_path):
    out = tmp_path / "art"
    result = run("export", str(tiny_onnx), "--train", "head", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["trainable_tensors"] == 2 and summary["trainable_parameters"] == 16 * 3 + 3
    assert summary["folder"] == str(out)
    shown = run("inspect", str(out))
    assert shown.returncode == 0 and "portable_step.onnx" in shown.stdout and "MISMATCH" not in shown.stdout
    as_json = json.loads(run("inspect", str(out), "--json").stdout)
    assert as_json["verified"] is True and as_json["manifest"]["trainable"]["spec"] == "head"


def test_export_table_lists_trainable_and_frozen(tiny_onnx, tmp_path):
    result = run("export", str(tiny_onnx), "--train", "last:1", "-o", str(tmp_path / "art"))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "blocks.2" in text and "trainable" in text and "frozen" in text
    assert "one training step ran" in text and "Training artifacts written to" in text


def test_inspect_detects_tampering(tiny_onnx, tmp_path):
    out = tmp_path / "art"
    assert run("export", str(tiny_onnx), "--train", "head", "-o", str(out), "--json").returncode == 0
    with open(out / "tail_portable_eval.onnx", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    shown = run("inspect", str(out))
    assert shown.returncode == 1
    assert "tail_portable_eval.onnx was modified" in shown.stderr and "MISMATCH" in shown.stdout


def test_user_errors_exit_1_without_traceback(tmp_path):
    cases = [
        (["export", str(tmp_path / "missing-model")], "was not found"),
        (["export", "models:mlp", "--input", "x:float32:batch,8", "--train", "nothing_matches"], "matches no parameter"),
        (["export", "--labels", str(tmp_path / "labels.txt")], "does not exist"),
        (["inspect", str(tmp_path)], "has no manifest.json"),
    ]
    for args, message in cases:
        result = run(*args, cwd=TESTS)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert "what to do:" in result.stderr


def test_usage_error_exit_2_as_the_readme_says():
    result = run("export", "--loss", "hinge")
    assert result.returncode == 2 and "Invalid value for '--loss'" in result.stderr
    readme = " ".join((TESTS.parent / "README.md").read_text(encoding="utf-8").split())
    assert "exit with status 1; usage errors (an unknown option, a value out of range) exit with status 2" in readme
