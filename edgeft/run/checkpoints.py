"""Run checkpoints: trainable tensors and optimizer state plus the loop's position, saved atomically.

A checkpoint is a folder ``checkpoints/step-NNNNNNNN`` holding the backend's state (edgeft's
``trainable.npz`` with parameters, optimizer moments and step, which both backends read; the
ORT training backend also writes its own ``checkpoint``), ``state.json`` (epoch, step, batch
position, best metric, history, and the checkpoint format) and ``sha256.json`` (the hash of each
of those files, checked whenever the checkpoint is read; a checkpoint without it is refused
unless its format says it predates the record). It is built in a staging folder and renamed into place, so a
run killed at any moment (even SIGKILL) leaves every listed checkpoint complete and loadable.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from edgeft.backends.state import (CHECKPOINT_FORMAT, FORMAT_KEY, LOOP_FILE, ORT_FILE, STATE_FILE,
                                  verify_checkpoint, write_hashes)
from edgeft.backends.trainer import Trainer
from edgeft.errors import EdgeftError
from edgeft.fsutil import staged_folder
from edgeft.validation import check, in_file, json_style

CHECKPOINTS = "checkpoints"
BEST = "best"
STATE = LOOP_FILE
ORT_CHECKPOINT = ORT_FILE
STATE_NPZ = STATE_FILE
_OLDER = "remove this checkpoint folder to resume from the one before it."


class LoopState(BaseModel):
    """The loop position saved with every checkpoint (``state.json``), checked when it is read."""

    model_config = ConfigDict(extra="forbid", strict=True)

    epoch: int = Field(0, ge=0)  # epochs completed
    batch: int = Field(0, ge=0)  # next batch within the current epoch
    step: int = Field(0, ge=0)  # optimizer steps done
    micro: int = Field(0, ge=0)  # train steps (micro-batches) done; seeds dropout
    best: Optional[float] = None
    best_epoch: Optional[int] = None
    bad_epochs: int = Field(0, ge=0)
    history: list[dict[str, Any]] = Field(default_factory=list)
    seconds: float = 0.0
    examples_seen: int = Field(0, ge=0)
    loss_sum: float = 0.0  # training loss of the current epoch so far, so a resumed epoch reports the same mean
    loss_count: int = Field(0, ge=0)


_STATE_STYLE = json_style("checkpoint state", _OLDER)


def save(folder: Path, trainer: Trainer, state: LoopState | Mapping[str, Any], force: bool = False) -> Path:
    """Write ``folder`` (the trainer's state with optimizer moments, state.json, then the hashes)
    atomically. ``state``: the training loop's position, or a federated run's (its round)."""
    with staged_folder(folder, force=force) as stage:
        trainer.save_checkpoint(stage)
        fields = state.model_dump() if isinstance(state, LoopState) else dict(state)
        marked = {**fields, FORMAT_KEY: CHECKPOINT_FORMAT}  # "written with a hash record" (see verify_checkpoint)
        (stage / STATE).write_text(json.dumps(marked, indent=1, sort_keys=True), encoding="utf-8")
        write_hashes(stage)
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


def load_state(folder: Path) -> LoopState:
    """The loop state saved with a checkpoint (its files verified first, the format marker left out);
    a damaged file is a clear error."""
    verify_checkpoint(folder)
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, bad UTF-8, huge numbers
        raise EdgeftError(f"The checkpoint state cannot be read: {str(exc)[:200]}.", where=str(folder / STATE),
                          hint=_OLDER) from exc
    if not isinstance(state, dict):
        raise EdgeftError("The checkpoint state is not a JSON object.", where=str(folder / STATE), hint=_OLDER)
    state.pop(FORMAT_KEY, None)
    return check(LoopState, state, in_file(folder / STATE), style=_STATE_STYLE)


def prune(run_dir: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` step checkpoints (the best one lives apart), and what a
    killed run left behind (this process writes one checkpoint at a time, so a staging folder that
    exists now belongs to a dead one)."""
    for old in listed(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for parent, prefix in ((run_dir / CHECKPOINTS, ".step-"), (run_dir, f".{BEST}.")):
        for stale in sorted(parent.glob(prefix + "*")) if parent.is_dir() else []:
            target = parent / stale.name[1:].split(".")[0]
            if ".old-" in stale.name and not target.exists():  # killed between the two renames of a replace
                os.replace(stale, target)
            else:
                shutil.rmtree(stale, ignore_errors=True)
