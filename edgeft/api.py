"""edgeft's Python API: export, package, train, evaluate, deploy, and predict with a bundle.

The ``edgeft`` CLI is a client of these functions, so a notebook, a CI script and the command
line share one implementation::

    import edgeft

    artifacts = edgeft.export("minilm", labels=["lights_on", "lights_off"], train="last:1")
    run = edgeft.train(artifacts, [("turn the lights on", "lights_on"), ...], epochs=5)
    print(run.after.accuracy, edgeft.evaluate(run, "test.csv").accuracy)
    bundle = edgeft.deploy(run, device="raspberry-pi-5")
    print(bundle.predict("lights off please")[0].label)

Paths may be ``str`` or ``Path``. Data may be a file or folder (as the CLI takes it), a list of
(text, label) pairs, or a mapping of arrays named like the model's inputs plus ``labels``.
Failures a caller can cause raise :class:`edgeft.EdgeftError` (what, where, what to do). Long
steps report through ``progress``: None (silent, the default), a callback taking a line of text
(``progress=print``) or an :class:`edgeft.reporter.Reporter`.

Export needs the host side (torch, transformers: ``pip install 'edgeft[export]'``); everything
else runs with onnxruntime alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgeft.backends.select import open_trainer
from edgeft.data.examples import DataOptions, ExampleSet
from edgeft.data.inline import INLINE_COLUMNS, Data, is_inline, write_inline
from edgeft.deployment.bundle import Bundle, Prediction
from edgeft.deployment.runtime import InferenceStepper
from edgeft.errors import EdgeftError
from edgeft.data.records import read_column, read_records
from edgeft.evaluation import metrics
from edgeft.evaluation.evaluate import Stepper, checkpoint_parameters, predict as predict_examples, resolve_model
from edgeft.manifest import MANIFEST_NAME, Manifest
from edgeft.reporter import Progress, as_reporter
from edgeft.results import Artifacts, Metrics, PathLike, Run
from edgeft.tasks import label_input
from edgeft.training.loop import TrainConfig

__all__ = ["Artifacts", "Bundle", "Metrics", "Prediction", "Run", "deploy", "evaluate", "export", "package", "train"]


@contextmanager
def _data_files(**given: Data | None) -> Iterator[dict[str, Path | None]]:
    """Each ``given`` data as a path: files as they are, in-memory examples written to a temporary
    folder for the duration (read by the same readers, with the same checks, as files)."""
    with tempfile.TemporaryDirectory(prefix="edgeft-data-") as tmp:
        yield {key: (write_inline(value, Path(tmp), key) if is_inline(value) else
                     Path(value) if value is not None else None) for key, value in given.items()}


def _columns(data: Data | None, text_column: str, label_column: str) -> tuple[str, str]:
    """The text and label columns to read ``data`` with: those of the file written for data given
    in memory, else the caller's."""
    return INLINE_COLUMNS if is_inline(data) else (text_column, label_column)


def _path(value: PathLike | Artifacts | Run | Bundle) -> Path:
    return Path(value.folder) if isinstance(value, Bundle) else Path(value)


def export(model: PathLike | None = None, *, labels: Sequence[str] | PathLike | None = None,
           num_labels: int | None = None, train: str = "last:1", output: PathLike | None = None,
           device: str | None = None, guard_data: Data | None = None, task: str | None = None, loss: str | None = None,
           optimizer: str = "adamw", max_length: int = 128, inputs: Sequence[str] = (), modality: str | None = None,
           clip_seconds: float | None = None, formats: Sequence[str] = ("portable",), dropout: bool = True, l2sp: float | None = None, seed: int = 0,
           max_drop: float | None = None, text_column: str = "text", label_column: str = "label", force: bool = False,
           name: str | None = None, progress: Progress = None) -> Artifacts:
    """Export a pretrained model as training artifacts in which only ``train`` trains.

    ``model``: None or ``"minilm"`` (the built-in all-MiniLM-L6-v2), a transformers folder (text,
    image or audio; ``clip_seconds`` sets the clip length of waveform audio models), an
    ONNX forward model or ``module:factory`` of a PyTorch module (with ``inputs``). ``labels``: the
    label names, or a .txt / .json file of them. ``task``: None (the loss's; classification by
    default) or ``"embedding"`` (the encoder's normalised sentence embedding trains, with the
    contrastive loss, on (text, group) data). With ``device`` (a profile name, a profile .toml or
    ``"auto"``) the result is a device package for it, its quantized prefix checked on
    ``guard_data``. Output defaults to ``artifacts/NAME`` (``artifacts/NAME-PROFILE``).
    """
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts
    from edgeft.labels import read_label_file

    names = read_label_file(Path(labels)) if isinstance(labels, (str, os.PathLike)) else list(labels or [])
    reporter = as_reporter(progress)
    columns = _columns(guard_data, text_column, label_column)
    with _data_files(guard=guard_data) as files:
        options = ExportOptions(model=None if model is None else str(model), output=Path(output) if output else None,
                                train=train, task=task, loss=loss, optimizer=optimizer, label_names=names, num_labels=num_labels,
                                max_length=max_length, inputs=list(inputs), modality=modality,
                                clip_seconds=clip_seconds, seed=seed,
                                dropout=dropout, l2sp=l2sp, formats=tuple(formats), device=device,
                                guard_data=files["guard"], max_drop=max_drop, text_column=columns[0],
                                label_column=columns[1], force=force, name=name)
        result = export_artifacts(options, reporter.message)
    return Artifacts(result.folder, result.manifest, tuple(result.notes), result)


def package(artifacts: PathLike | Artifacts, *, device: str = "auto", guard_data: Data | None = None,
            output: PathLike | None = None, max_drop: float | None = None, text_column: str = "text",
            label_column: str = "label", force: bool = False, progress: Progress = None) -> Artifacts:
    """A device package for ``device`` from an existing artifact folder (needs no torch)."""
    from edgeft.packaging.writer import make_package

    with _data_files(guard=guard_data) as files:
        result = make_package(_path(artifacts), device, output, files["guard"], max_drop, force,
                              *_columns(guard_data, text_column, label_column), progress=as_reporter(progress).message)
    return Artifacts(result.folder, result.manifest, tuple(result.notes), result)


def train(artifacts: PathLike | Artifacts, data: Data, *, val: Data | None = None, run_dir: PathLike | None = None,
          config: TrainConfig | None = None, threads: int | None = None, backend: str = "auto",
          resume: bool = False, force: bool = False, text_column: str = "text", label_column: str = "label",
          strict: bool = False, progress: Progress = None, **settings: Any) -> Run:
    """Fine-tune the trainable layers of ``artifacts`` (a folder or a device package) on ``data``.

    ``settings`` are :class:`edgeft.training.loop.TrainConfig` fields (``epochs``, ``lr``,
    ``batch_size``, ``patience``, ``val_fraction``, ...), over ``config`` when given. The run folder
    defaults to ``artifacts/runs/NAME``; data given in memory is kept in it (``data/``), so deploy
    and ``resume`` find it. Returns the finished :class:`Run`.
    """
    from edgeft.training.loop import train as train_loop

    source = _path(artifacts)
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TypeError(f"train() got unknown setting(s) {', '.join(unknown)}; see edgeft.training.loop.TrainConfig")
    chosen = dataclasses.replace(config or TrainConfig(), **settings)
    folder = Path(run_dir) if run_dir is not None else Path("artifacts") / "runs" / source.resolve().name
    inline = is_inline(data)
    if is_inline(val) != inline and val is not None:
        raise EdgeftError("train() takes the training and validation data both in memory or both as files.",
                          where="val", hint="give val the same way as data.")
    text_column, label_column = _columns(data, text_column, label_column)
    with _data_files(train=data, val=val) as files:
        options = DataOptions(train=files["train"], val=files["val"], text_column=text_column,
                              label_column=label_column, strict=strict, keep_in_run=inline)
        summary = train_loop(source, options, folder, chosen, threads=threads, resume=resume, force=force,
                             reporter=as_reporter(progress), backend=backend)
    return Run(folder, summary)


def evaluate(model: PathLike | Artifacts | Run | Bundle, data: Data, *, checkpoint: PathLike | None = None,
             batch_size: int = 32, threads: int | None = None, text_column: str = "text",
             label_column: str = "label", strict: bool = False, backend: str = "auto", by: str | None = None,
             reference: PathLike | Sequence[str] | None = None) -> Metrics:
    """Metrics of an artifact folder, a run (its best checkpoint, or ``checkpoint``) or a bundle
    (the deployed model itself, with onnxruntime alone) on ``data``; with ``by`` (a column of a
    table or JSONL file) also per value of that column, and the worst such slice (``slices``).
    ``reference``: texts unrelated to the task (a file as ``predict`` reads it, or a list), on which
    the fine-tuned outputs are compared with the exported model's (``Metrics.retention``)."""
    if is_inline(data) and by is not None:
        raise EdgeftError("by= reads a column of a data file, and data given in memory holds texts and labels only.",
                          where="by", hint="give the data as a .csv, .tsv or .jsonl file with that column.")
    with _data_files(data=data) as files:
        result = _evaluate_folder(_path(model), files["data"], Path(checkpoint) if checkpoint else None, batch_size,
                                 threads, *_columns(data, text_column, label_column), strict, backend, by)
    if reference is not None:
        result["retention"] = _retention(_path(model), Path(checkpoint) if checkpoint else None, reference,
                                         batch_size, threads, text_column, backend)
    return Metrics.from_dict(result)  # type: ignore[return-value]


def _retention(path: Path, checkpoint: Path | None, reference: PathLike | Sequence[str], batch_size: int,
               threads: int | None, text_column: str, backend: str) -> dict[str, Any]:
    """The fine-tuned model's outputs on ``reference`` texts against the exported model's."""
    import numpy as np

    from edgeft.data.records import Records, read_texts
    from edgeft.evaluation.retention import retention

    if _is_bundle(path):
        raise EdgeftError("--reference compares a fine-tuned model with its pretrained start, which a bundle does "
                          "not hold.", where=str(path), hint="evaluate the run folder the bundle was deployed from.")
    manifest, checkpoint = resolve_model(path, checkpoint)
    if manifest.data["modality"] != "text":
        raise EdgeftError("--reference reads texts, and this model takes "
                          f"{manifest.data['modality']} inputs.", where="--reference", hint="leave out --reference.")
    where = "reference" if not isinstance(reference, (str, os.PathLike)) else str(reference)
    if isinstance(reference, (str, os.PathLike)):
        if not Path(reference).is_file():
            raise EdgeftError(f"The reference file {reference} does not exist.", where=where, hint="check the path.")
        texts = read_texts(Path(reference), text_column)
    else:
        texts = [str(text) for text in reference]
    if not texts:
        raise EdgeftError("The reference holds no texts.", where=where, hint="give texts unrelated to the task.")
    spec = manifest.data["labels"]["input"]
    shape = [len(texts) if not isinstance(d, int) else d for d in spec["shape"]]
    examples = ExampleSet(Records(source=where, texts=texts, labels=np.zeros(shape, dtype=spec["dtype"]),
                                  places=[f"{where}:{i + 1}" for i in range(len(texts))]), manifest)
    original = open_trainer(manifest, backend, threads=threads)
    tuned = open_trainer(manifest, backend, threads=threads)
    if checkpoint is not None:
        tuned.load_parameters(checkpoint_parameters(Path(checkpoint)))
    _, before, _ = predict_examples(original, examples, batch_size)
    _, after, _ = predict_examples(tuned, examples, batch_size)
    found = {"reference": where, **retention(manifest.data["task"], before, after)}
    new = manifest.data["trainable"].get("new") or []
    if new and manifest.data["task"] != "embedding":
        found["note"] = (f"{len(new)} trainable tensor(s) are newly initialised (a new head): their outputs before "
                         "fine-tuning are those of an untrained head, so the change measures the head's training too")
    return found


def deploy(run: PathLike | Run | Artifacts, *, device: str = "auto", output: PathLike | None = None,
           val: Data | None = None, max_drop: float | None = None, checkpoint: PathLike | None = None,
           sequence: int = 64, text_column: str = "text", label_column: str = "label", force: bool = False,
           progress: Progress = None) -> Bundle:
    """A quantized, accuracy-guarded inference bundle of ``run`` for ``device`` (a profile name, a
    .toml path or ``"auto"``; a device package's run deploys for its own profile). Output defaults
    to ``artifacts/bundles/NAME-PROFILE``; the report is ``Bundle.report``. ``sequence``: the
    token count latency is measured at."""
    from edgeft.deployment.pipeline import DeployOptions, deploy as deploy_bundle

    text_column, label_column = _columns(val, text_column, label_column)
    with _data_files(val=val) as files:
        report = deploy_bundle(DeployOptions(source=_path(run), device=device, output=Path(output) if output else None,
                                             val=files["val"], text_column=text_column,
                                             label_column=label_column, max_drop=max_drop,
                                             sequence=sequence, force=force, checkpoint=Path(checkpoint) if checkpoint else None),
                               as_reporter(progress).message)
    return Bundle(report["bundle"])


def _evaluate_folder(path: Path, data: Path, checkpoint: Path | None = None, batch_size: int = 32,
                    threads: int | None = None, text_column: str = "text", label_column: str = "label",
                    strict: bool = False, backend: str = "auto", by: str | None = None) -> dict[str, Any]:
    """Metrics of an artifact folder, a trained run or a bundle on a data file, as a dict."""
    if _is_bundle(path):
        if checkpoint is not None:
            raise EdgeftError("--checkpoint does not apply to a bundle: it holds one model.", where=str(path),
                              hint="leave out --checkpoint, or evaluate the run folder the bundle was deployed from.")
        stepper, manifest, spec = _bundle_stepper(path, threads)
    else:
        manifest, checkpoint = resolve_model(path, checkpoint)
        spec = manifest.data
        stepper = open_trainer(manifest, backend, threads=threads)
        if checkpoint is not None:
            stepper.load_parameters(checkpoint_parameters(Path(checkpoint)))
    records = read_records(data, spec, text_column=text_column, label_column=label_column, strict=strict)
    groups = read_column(data, by) if by is not None else None
    task, names = manifest.data["task"], manifest.data["labels"]["names"]
    if task == "embedding":
        metrics.require_queries(records.labels, f"text of {data}", str(data))
    loss, outputs, labels = predict_examples(stepper, ExampleSet(records, manifest), batch_size)
    result = {"model": str(path), "checkpoint": str(checkpoint) if checkpoint else None, "data": str(data),
              "examples": len(records), "skipped": len(records.skipped), "labels": names,
              "loss": loss, **metrics.compute(task, outputs, labels, len(names))}
    if groups is not None:
        result["by"] = _slices(by, [groups.get(place, "") for place in records.places], task, outputs, labels,
                               len(names))
    return result


def _slices(column: str, values: list[str], task: str, outputs: Any, labels: Any, num_labels: int) -> dict[str, Any]:
    """The task's metrics per value of ``column`` (a slice), and the worst slice by the task's
    default metric: where a model carries a bias over from pretraining, or the data is thin."""
    import numpy as np

    metric = metrics.default_metric(task)
    slices = []
    for value in sorted(set(values)):
        chosen = np.array([v == value for v in values])
        scores = {k: v for k, v in metrics.compute(task, outputs[chosen], labels[chosen], num_labels).items()
                  if k != "confusion"}
        slices.append({"value": value, "examples": int(chosen.sum()), **scores})
    pick = max if not metrics.HIGHER_IS_BETTER[metric] else min
    worst = pick(slices, key=lambda row: row[metric]) if slices else None
    return {"column": column, "metric": metric, "slices": slices, "worst": worst["value"] if worst else None}


def _is_bundle(path: Path) -> bool:
    """Whether ``path`` holds a bundle (a cheap look at its manifest; loading it checks the rest)."""
    try:
        return json.loads((Path(path) / MANIFEST_NAME).read_text(encoding="utf-8")).get("kind") == "bundle"
    except (OSError, ValueError, AttributeError, RecursionError):
        return False  # not readable as a bundle: resolve_model says what is wrong


def _bundle_stepper(path: Path, threads: int | None) -> tuple[Stepper, Manifest, dict[str, Any]]:
    """The deployed (quantized) model of a bundle as an eval stepper, run by onnxruntime alone (the
    figure a fleet owner checks on the device before trusting a bundle); with its manifest, and
    the manifest's fields completed with the labels tensor, which data reading needs."""
    bundle = Bundle(path, threads=threads)
    spec = bundle.manifest.data
    width = int(spec["output"]["shape"][-1])
    readable = {**spec, "labels": {**spec["labels"], "input": label_input(spec["loss"], width)}}
    return InferenceStepper(bundle.session, bundle.manifest), bundle.manifest, readable
