"""The device side must run with onnxruntime, numpy and light helpers only."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import HEAVY, cli_calls, run_device_side
DEVICE_MODULES = ["edgeft", "edgeft.cli", "edgeft.manifest", "edgeft.fsutil", "edgeft.selection", "edgeft.tasks",
                  "edgeft.labels", "edgeft.ortcompat", "edgeft.report", "edgeft.backends.ort_training",
                  "edgeft.backends.portable", "edgeft.backends.state", "edgeft.backends.select",
                  "edgeft.progress", "edgeft.training.loop", "edgeft.data.cache", "edgeft.evaluation.evaluate",
                  "edgeft.commands.inspect", "edgeft.commands.train", "edgeft.commands.evaluate"]


def test_device_modules_import_no_heavy_packages():
    code = "\n".join([*(f"import {m}" for m in DEVICE_MODULES), "import sys",
                      f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.ort_training
def test_training_backend_runs_without_heavy_packages(tiny_onnx, export_cache):
    result = export_cache(model=str(tiny_onnx), train="head")
    code = ("import numpy as np\nfrom edgeft.cli import main\nfrom edgeft.manifest import load_manifest\n"
            "from edgeft.backends.ort_training import OrtTrainer\n"
            f"try:\n main(['inspect', {str(result.folder)!r}, '--json'])\nexcept SystemExit as e: assert not e.code\n"
            f"t = OrtTrainer(load_manifest({str(result.folder)!r}))\n"
            "loss, _ = t.train_step({'x': np.ones((2, 8), np.float32), 'labels': np.zeros(2, np.int64)})\n"
            "t.optimizer_step()\nprint('loss', loss)\n")
    out = run_device_side(code)
    assert out.returncode == 0, out.stderr
    assert "loss " in out.stdout


# onnxruntime as on Linux aarch64 (plain onnxruntime): the training package cannot be imported
NO_TRAINING_API = ("import sys\nsys.modules['onnxruntime.training'] = None\n"
                   "sys.modules['onnxruntime.training.api'] = None\n")


def test_portable_training_runs_on_plain_onnxruntime(tiny_bert, export_cache, tmp_path):
    from test_train import LABELS, dataset, write_csv

    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder  # dropout on
    data = write_csv(tmp_path / "train.csv", dataset(5, 20))
    run = str(tmp_path / "run")
    code = (NO_TRAINING_API + "from edgeft.backends.select import resolve_backend\n"
            "assert resolve_backend('auto') == 'portable'\n" +
            cli_calls(["train", str(artifacts), str(data), "--epochs", "2", "--threads", "1", "--json",
                       "--run-dir", run, "--backend", "auto"], ["evaluate", run, str(data), "--json"],
                      ["verify", str(artifacts)]) +
            "try:\n    main(['train', " + repr(str(artifacts)) + ", " + repr(str(data)) + ", '--backend', 'ort-training',"
            " '--run-dir', " + repr(str(tmp_path / "r2")) + "])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('heavy', sorted(m for m in ('torch', 'onnxruntime.training') if sys.modules.get(m)))\n")
    out = run_device_side(code)
    assert out.returncode == 0, out.stderr
    assert '"backend": "portable"' in out.stdout and '"accuracy"' in out.stdout
    assert "portable training graphs load" in out.stdout + out.stderr
    assert "exit 1" in out.stdout and "training API is not installed" in out.stderr
    assert "heavy []" in out.stdout


@pytest.mark.ort_training
def test_training_on_a_host_with_torch_does_not_import_it(tiny_onnx, export_cache):
    """torch is installed here and not blocked: onnxruntime-training imports it on its own (checked
    first, so this test cannot pass vacuously), and edgeft's import workaround (edgeft/ortimport.py)
    keeps a whole training step free of it."""
    result = export_cache(model=str(tiny_onnx), train="head")
    control = subprocess.run([sys.executable, "-c", "import sys, onnxruntime\nprint('torch' in sys.modules)"],
                             capture_output=True, text=True, timeout=120)
    assert control.returncode == 0 and control.stdout.strip() == "True", control.stderr
    code = ("import sys\nimport numpy as np\nfrom edgeft.manifest import load_manifest\n"
            "from edgeft.backends.ort_training import OrtTrainer\n"
            f"t = OrtTrainer(load_manifest({str(result.folder)!r}), threads=1)\n"
            "t.train_step({'x': np.ones((2, 8), np.float32), 'labels': np.zeros(2, np.int64)})\nt.optimizer_step()\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), 'onnxruntime.training.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[] True"
