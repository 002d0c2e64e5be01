"""The server's side of the model: initial tensors, evaluation on held-out data, and the run folder.

The server holds the same artifact folder (or device package) the devices train and evaluates
each round's global tensors on a validation file with the portable backend's evaluation graph,
through the frozen-prefix cache (the frozen part runs once over the validation set, not every
round). At the end it writes an edgeft run folder (``run.json``, ``checkpoints/``, ``best/``,
``metrics.jsonl``, ``summary.json``) of the best global round, so ``edgeft evaluate`` and
``edgeft deploy`` take a federated run like any other; its record has no training data (that
stayed on the devices) and names the federation's settings as its config.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.backends.portable import PortableTrainer
from edgeft.data.cache import CachedExamples
from edgeft.data.examples import ExampleSet
from edgeft.data.records import read_records
from edgeft.evaluation import metrics
from edgeft.evaluation.evaluate import Examples, evaluate
from edgeft.fleet.local import open_artifacts, tensor_fingerprint, trainable_names
from edgeft.fsutil import atomic_write_text, sha256_file, staged_folder
from edgeft.manifest import MANIFEST_NAME, TAIL_PREFIX
from edgeft.outputs import output_check
from edgeft.run import checkpoints
from edgeft.run.record import RunRecord
from edgeft.training.loop import METRICS_FILE, SUMMARY_FILE


class GlobalModel:
    """The artifacts on the server: what round 0 sends, and how good each round's tensors are."""

    def __init__(self, artifacts: Path, val: Path | None, text_column: str = "text", label_column: str = "label",
                 threads: int | None = None, batch_size: int = 32) -> None:
        self.artifacts = Path(artifacts)
        self.manifest = open_artifacts(self.artifacts)
        self.names = trainable_names(self.manifest)
        self.task = self.manifest.task
        self.metric = metrics.default_metric(self.task)
        self.batch_size = batch_size
        self.columns = {"text_column": text_column, "label_column": label_column}
        cached = bool(self.manifest.data.get("cache", {}).get("available"))
        self.val: Examples | None = None
        self.val_path = Path(val) if val is not None else None
        examples = ExampleSet(read_records(val, self.manifest.data, **self.columns), self.manifest) \
            if val is not None else None
        self.trainer = PortableTrainer(self.manifest, threads=threads, prefix=TAIL_PREFIX if cached else "")
        self._scratch = Path(tempfile.mkdtemp(prefix="edgeft-fleet-"))
        if examples is not None:
            self.val = CachedExamples(examples, self.manifest, threads, 256 * 2**20, self._scratch) if cached else examples

    def initial(self) -> list[np.ndarray]:
        """The exported trainable values, in the order they travel."""
        values = self.trainer.parameters()
        return [np.array(values[name], dtype=np.float32) for name in self.names]

    def fingerprint(self) -> str:
        """What the devices' packages must train: the tensors' names and shapes, hashed (a device
        with another export refuses the round instead of training the wrong tensors)."""
        values = self.trainer.parameters()
        return tensor_fingerprint(self.names, [values[name].shape for name in self.names])

    def load(self, tensors: Sequence[np.ndarray]) -> None:
        self.trainer.load_parameters(dict(zip(self.names, tensors, strict=True)))

    def evaluate(self, tensors: Sequence[np.ndarray]) -> dict[str, Any] | None:
        """Validation loss and metrics of ``tensors`` (None without validation data)."""
        if self.val is None:
            return None
        self.load(tensors)
        return evaluate(self.trainer, self.val, self.task, len(self.manifest.label_names), self.batch_size)

    def write_run(self, run_dir: Path, history: list[dict[str, Any]], best: Sequence[np.ndarray] | None,
                  best_round: int | None, final: Sequence[np.ndarray], config: dict[str, Any], force: bool = False,
                  extra: dict[str, Any] | None = None, also: Any = None) -> dict[str, Any]:
        """Write the federated run (best and final global tensors) as an edgeft run folder; its summary."""
        run_dir = Path(run_dir)
        rounds = len(history) - 1
        chosen = run_dir / checkpoints.BEST if best is not None else checkpoints.step_folder(run_dir, rounds)
        evaluated = [entry for entry in history if entry.get("val")]
        summary = {
            "run_dir": str(run_dir), "artifacts": str(self.artifacts), "task": self.task, "metric": self.metric,
            "federated": True, "rounds": rounds, **(extra or {}),
            "before": history[0].get("val") if history else None,
            "after": evaluated[-1]["val"] if evaluated else None,
            "best": {"round": best_round, self.metric: (history[best_round]["val"] or {}).get(self.metric)
                     if best_round is not None else None},
            "checkpoint": str(chosen),
        }
        record = RunRecord.create(run_dir, self.artifacts, sha256_file(self.artifacts / MANIFEST_NAME), None,
                                  self.val_path, self.columns, {"fleet": config})
        with staged_folder(run_dir, force, check=output_check("run", "--run-dir")) as stage:
            RunRecord(stage, record.data).write()  # its paths are relative to run_dir, the stage's final name
            self.load(final)
            checkpoints.save(checkpoints.step_folder(stage, rounds), self.trainer, {"round": rounds, "fleet": True})
            if best is not None:
                self.load(best)
                checkpoints.save(stage / checkpoints.BEST, self.trainer, {"round": best_round, "fleet": True})
            atomic_write_text(stage / METRICS_FILE, "".join(json.dumps(entry) + "\n" for entry in history))
            if also is not None:
                also(stage, history, summary)
            atomic_write_text(stage / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        return summary

    def close(self) -> None:
        if isinstance(self.val, CachedExamples):
            self.val.close()
        shutil.rmtree(self._scratch, ignore_errors=True)
