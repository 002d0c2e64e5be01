"""The device side on another Python: a package exported here trains, deploys and predicts there.

`make test` builds `.venv-313` (Python 3.13, edgeft without the export extra, so no torch) and
points EDGEFT_DEVICE_PYTHON at it; elsewhere this test skips.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import cli_calls
from test_train import LABELS, dataset, write_csv

DEVICE_PYTHON = os.environ.get("EDGEFT_DEVICE_PYTHON")


@pytest.mark.skipif(not DEVICE_PYTHON, reason="EDGEFT_DEVICE_PYTHON (a device-side Python, e.g. .venv-313) not set")
def test_a_package_trains_deploys_and_predicts_on_the_device_python(tiny_bert, export_cache, tmp_path):
    train_csv, val_csv = write_csv(tmp_path / "train.csv", dataset(0, 30)), write_csv(tmp_path / "val.csv", dataset(1, 8))
    package = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", device="x86-64-avx2",
                           guard_data=train_csv).folder
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    code = ("import sys, importlib.util\n"
            "print('python', sys.version_info[:2], 'torch', importlib.util.find_spec('torch') is not None)\n"
            + cli_calls(["verify", str(package)],
                        ["train", str(package), str(train_csv), "--val", str(val_csv), "--epochs", "3", "--lr", "3e-3",
                         "--batch-size", "8", "--threads", "1", "--run-dir", str(run), "--json"],
                        ["evaluate", str(run), str(val_csv), "--json"],
                        ["deploy", str(run), "-o", str(bundle), "--json"],
                        ["predict", str(bundle), "turn on the lights", "--json"]))
    out = subprocess.run([DEVICE_PYTHON, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    version = subprocess.run([DEVICE_PYTHON, "-c", "import sys; print(sys.version_info[1])"], capture_output=True,
                             text=True).stdout.strip()
    assert f"python (3, {version})" in out.stdout and "torch False" in out.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backend"] == "portable" and summary["after"]["loss"] < summary["before"]["loss"]
    report = json.loads((bundle / "report.json").read_text())
    assert report["package"]["prefix"] and Path(report["bundle"]) == bundle
