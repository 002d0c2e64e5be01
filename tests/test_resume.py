"""--resume is a resume, not a restart: after a SIGKILL the run continues from its newest checkpoint.

A run restarted from scratch reaches the same weights as a resumed one (data order and dropout
are functions of the seed and the step), so equal final weights prove nothing about resuming.
These tests kill a real training process after several checkpoints, resume it, and check what
only a resume does: it starts at the newest checkpoint's step (> 0), runs exactly the remaining
steps, and leaves every checkpoint written before it byte for byte as it was (not even renamed
anew); and it still ends with the uninterrupted run's result, bit for bit. Both backends.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from conftest import ORT, BLOCK_HEAVY, TESTS
from edgeft.run import checkpoints
from edgeft.training.loop import DataOptions, Reporter, TrainConfig, train
from reliability_faults import checkpoint_marks, differences, resume_problems, resumed_at, run_result, wait_for
from test_train import LABELS, dataset, write_csv

CONFIG = TrainConfig(epochs=2, batch_size=2, checkpoint_every=10, keep=100, seed=5)  # keep: no checkpoint pruned
KILL_AFTER = 3  # checkpoints on disk before the kill


class Recorder(Reporter):
    """The progress events of a run, in the form ``reliability_faults.resume_problems`` reads."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def message(self, text: str) -> None:
        self.events.append({"event": "message", "text": text})

    def start(self, total_steps: int, done_steps: int, epochs: int) -> None:
        self.events.append({"event": "start", "total": total_steps, "done": done_steps})

    def step(self, step: int, loss: float, examples_per_second: float, lr: float) -> None:
        self.events.append({"event": "step", "step": step})


@pytest.fixture(scope="module")
def setup(tiny_bert, export_cache, tmp_path_factory) -> tuple[Path, DataOptions]:
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder  # dropout on
    data = write_csv(tmp_path_factory.mktemp("resume-data") / "train.csv", dataset(2, 60))
    return artifacts, DataOptions(train=data)


def _killed_run(artifacts: Path, options: DataOptions, run_dir: Path, backend: str) -> None:
    """Train in another process and SIGKILL it once KILL_AFTER checkpoints are on disk."""
    code = BLOCK_HEAVY + (
        "from pathlib import Path\nfrom edgeft.training.loop import DataOptions, TrainConfig, train\n"
        f"train(Path({str(artifacts)!r}), DataOptions(train=Path({str(options.train)!r})), Path({str(run_dir)!r}), "
        f"TrainConfig(**{asdict(CONFIG)!r}), threads=1, backend={backend!r})\n")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=TESTS, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(checkpoints.listed(run_dir)) >= KILL_AFTER, process)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before it was killed: {err[-2000:]}"


@pytest.mark.parametrize("backend", [ORT, "portable"])
def test_resume_continues_from_the_newest_checkpoint_and_runs_only_the_remaining_steps(setup, tmp_path, backend):
    artifacts, options = setup
    train(artifacts, options, tmp_path / "reference", CONFIG, threads=1, backend=backend)
    run = tmp_path / "run"
    _killed_run(artifacts, options, run, backend)
    name, step = at = resumed_at(run)
    before, epoch = checkpoint_marks(run), checkpoints.load_state(checkpoints.latest(run)).epoch
    assert step >= KILL_AFTER * CONFIG.checkpoint_every and name == f"step-{step:08d}"

    recorder = Recorder()
    summary = train(artifacts, options, run, CONFIG, threads=1, resume=True, reporter=recorder, backend=backend)
    after = checkpoint_marks(run)
    assert f"resuming from {name} (epoch {epoch}, step {step}) with the {backend} backend" in \
        [e["text"] for e in recorder.events if e["event"] == "message"]
    start = next(e for e in recorder.events if e["event"] == "start")
    assert start["done"] == step and start["total"] == summary["steps"]
    assert [e["step"] for e in recorder.events if e["event"] == "step"] == list(range(step + 1, summary["steps"] + 1))
    assert set(before) <= set(after) and {k: after[k] for k in before} == before  # same folders, same bytes
    assert resume_problems(recorder.events, at, before, after, finished=True) == []  # the kill trials' check agrees
    assert differences(run_result(tmp_path / "reference"), run_result(run)) == []


def test_a_checkpoint_folder_without_its_loop_state_is_passed_over(tmp_path):
    """Only complete checkpoints count (edgeft renames a checkpoint into place once it is written;
    a step folder without state.json is not one, e.g. copied in part by hand): --resume continues
    from the newest complete one."""
    run = tmp_path / "run"
    complete, partial = checkpoints.step_folder(run, 5), checkpoints.step_folder(run, 9)
    complete.mkdir(parents=True)
    (complete / checkpoints.STATE).write_text('{"step": 5}')
    partial.mkdir()
    (partial / checkpoints.STATE_NPZ).write_bytes(b"")
    assert checkpoints.listed(run) == [complete] and checkpoints.latest(run) == complete
    assert resumed_at(run) == ("step-00000005", 5)


def test_pruning_keeps_the_newest_checkpoints(tmp_path):
    run = tmp_path / "run"
    for step in (7, 14, 21, 28):
        folder = checkpoints.step_folder(run, step)
        folder.mkdir(parents=True)
        (folder / checkpoints.STATE).write_text(f'{{"step": {step}}}')
    checkpoints.prune(run, keep=2)
    assert [p.name for p in checkpoints.listed(run)] == ["step-00000021", "step-00000028"]
