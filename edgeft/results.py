"""What the Python API returns: the artifact folder (:class:`Artifacts`), a finished training
run (:class:`Run`) and evaluation results (:class:`Metrics`); a bundle is
:class:`edgeft.deployment.bundle.Bundle`. Each refers to its folder, so ``str(run)`` or
``os.fspath(artifacts)`` is the path the CLI takes."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from edgeft.errors import EdgeftError
from edgeft.manifest import Manifest, check_fields, load_manifest
from edgeft.training.loop import METRICS_FILE, SUMMARY_FILE

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Artifacts:
    """An artifact folder or a device package: what training starts from (verified on open)."""

    path: Path
    manifest: Manifest = field(repr=False)
    notes: tuple[str, ...] = ()
    # what export() or package() reported (an ExportResult: every tensor, repairs, the smoke step's
    # loss; or a PackageResult), None for a folder opened with Artifacts.open
    built: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, path: PathLike) -> Artifacts:
        """Read and verify (manifest fields, every file's sha256) an existing folder."""
        return cls(Path(path), check_fields(load_manifest(path, kind=("artifacts", "package"))))

    @property
    def kind(self) -> str:
        """``artifacts`` (from ``export``) or ``package`` (a device package)."""
        return self.manifest.kind

    @property
    def name(self) -> str:
        return str(self.manifest.data["name"])

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        return self.manifest.label_names

    @property
    def trainable(self) -> list[str]:
        """The names of the tensors that train, in forward order."""
        return [t["name"] for t in self.manifest.data["trainable"]["tensors"]]

    @property
    def device(self) -> str | None:
        """The profile a device package was prepared for (None for an artifact folder)."""
        return self.manifest.data["device"]["name"] if self.kind == "package" else None

    def __fspath__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class Metrics:
    """Evaluation results; the fields that do not apply to the task are None.

    Classification: ``loss``, ``accuracy``, ``macro_f1``, ``confusion`` (rows: true label,
    columns: predicted). Multi-label: exact-match ``accuracy``, ``micro_f1``, ``macro_f1``.
    Regression: ``mae``, ``rmse``. Embedding: ``recall_at_1`` / ``_5`` / ``_10`` and ``mrr`` (each
    example a query against the others; ``recall@1`` ... in ``record``). With ``reference=``:
    ``retention`` (see :mod:`edgeft.evaluation.retention`).
    """

    loss: float | None = None
    accuracy: float | None = None
    macro_f1: float | None = None
    micro_f1: float | None = None
    mae: float | None = None
    rmse: float | None = None
    recall_at_1: float | None = None
    recall_at_5: float | None = None
    recall_at_10: float | None = None
    mrr: float | None = None
    confusion: list[list[int]] | None = None
    examples: int | None = None
    # with evaluate(by=COLUMN): {"column", "metric", "slices": [{"value", "examples", metrics...}], "worst"}
    by: dict[str, Any] | None = None
    labels: list[str] | None = None
    retention: dict[str, Any] | None = None
    # the whole record as evaluation wrote it (also the model, checkpoint and data evaluated, and
    # the count of skipped rows: what `edgeft evaluate --json` prints)
    record: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Metrics | None:
        if values is None:
            return None
        names = {f.name for f in dataclasses.fields(cls)} - {"record"}
        given = {key.replace("@", "_at_"): value for key, value in values.items()}
        return cls(**{name: given[name] for name in names if name in given}, record=dict(values))


@dataclass(frozen=True)
class Run:
    """A finished training run: its folder, its summary and its best checkpoint."""

    path: Path
    summary: dict[str, Any] = field(repr=False)

    @classmethod
    def open(cls, path: PathLike) -> Run:
        """A run folder written by ``train`` (or ``edgeft train``)."""
        folder = Path(path)
        try:
            summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EdgeftError(f"{folder} holds no finished run ({SUMMARY_FILE} cannot be read).", where=str(folder),
                              hint="give a run folder written by edgeft train (an interrupted run: --resume it).") from exc
        return cls(folder, summary)

    @property
    def before(self) -> Metrics | None:
        """Validation metrics before training (None without validation data)."""
        return Metrics.from_dict(self.summary.get("before"))

    @property
    def after(self) -> Metrics | None:
        """Validation metrics after the last epoch."""
        return Metrics.from_dict(self.summary.get("after"))

    @property
    def checkpoint(self) -> Path:
        """The checkpoint ``evaluate`` and ``deploy`` use: the best on validation, else the last."""
        return Path(self.summary["checkpoint"])

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per epoch (``metrics.jsonl``), epoch 0 being the validation before training."""
        text = (self.path / METRICS_FILE).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def __fspath__(self) -> str:
        return str(self.path)
