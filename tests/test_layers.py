"""The import layers in pyproject.toml ([tool.importlinter]) hold: the CLI over the API over the
steps, training and deployment independent of each other, the device side free of the host
side. import-linter reads every import statement, lazy ones inside functions included."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_hold():
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert linter is not None, "import-linter is part of the test extra: pip install '.[test]'"
    out = subprocess.run([linter, "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout
