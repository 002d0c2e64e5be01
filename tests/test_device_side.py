"""The device side must run with onnxruntime, numpy and light helpers only."""

from __future__ import annotations

import subprocess
import sys

from conftest import HEAVY, run_device_side
DEVICE_MODULES = ["edgeft", "edgeft.cli", "edgeft.manifest", "edgeft.fsutil", "edgeft.selection", "edgeft.tasks",
                  "edgeft.labels", "edgeft.ortcompat", "edgeft.report", "edgeft.backends.ort_training",
                  "edgeft.progress", "edgeft.train.loop", "edgeft.train.cache", "edgeft.train.evaluate",
                  "edgeft.commands.inspect", "edgeft.commands.train", "edgeft.commands.evaluate"]


def test_device_modules_import_no_heavy_packages():
    code = "\n".join([*(f"import {m}" for m in DEVICE_MODULES), "import sys",
                      f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


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
