"""Run checkpoints: ORT parameters and optimizer state plus the loop's position, saved atomically.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN`` holding the ORT checkpoint and
``state.json`` (epoch, step, batch position, best metric, history). It is built in a staging
folder and renamed into place, so a run killed at any moment (even SIGKILL) leaves every listed
checkpoint complete and loadable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgeft.errors import EdgeftError
from edgeft.fsutil import staged_folder
from edgeft.ortcompat import training_api

CHECKPOINTS = "checkpoints"
BEST = "best"
STATE = "state.json"
ORT_CHECKPOINT = "checkpoint"


def save(folder: Path, ort_state: Any, state: dict[str, Any], force: bool = False) -> Path:
    """Write ``folder`` (ORT checkpoint with optimizer state, then state.json) atomically."""
    with staged_folder(folder, force=force) as stage:
        training_api().CheckpointState.save_checkpoint(ort_state, str(stage / ORT_CHECKPOINT), include_optimizer_state=True)
        (stage / STATE).write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    return folder


def step_folder(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def listed(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (staging folders are hidden and ignored)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE).is_file())


def latest(run_dir: Path) -> Path | None:
    found = listed(run_dir)
    return found[-1] if found else None


def load_state(folder: Path) -> dict[str, Any]:
    """The loop state saved with a checkpoint; a damaged file is a clear error."""
    try:
        return json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgeftError(f"The checkpoint state cannot be read: {exc}.", where=str(folder / STATE),
                          hint="remove this checkpoint folder to resume from the one before it.") from exc


def prune(run_dir: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step checkpoints (the best one lives apart)."""
    for old in listed(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
