"""``edgeft train``: the whole fine-tuning loop around ONNX Runtime's train / optimizer steps.

Epochs or max steps, warm-up and decay, gradient accumulation, early stopping on a validation
metric with the best checkpoint kept, atomic checkpoints that resume exactly (data order and
dropout randomness are functions of the seed and the step, so nothing random needs saving),
and one JSON line of metrics per epoch in the run folder.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.backends.select import Trainer, check_l2sp, open_trainer, resolve_backend
from edgeft.data.batching import grouped_batches, length_bucketed_batches, token_pieces
from edgeft.data.cache import CachedExamples
from edgeft.data.examples import KEPT_DATA, DataOptions, load_examples
from edgeft.errors import EdgeftError
from edgeft.evaluation import metrics
from edgeft.evaluation.evaluate import Examples, evaluate
from edgeft.fsutil import atomic_write_bytes, atomic_write_text, sha256_file, write_failed
from edgeft.machine import peak_rss_mb
from edgeft.manifest import MANIFEST_NAME, TAIL_PREFIX, TRAINABLE_KINDS, Manifest, check_fields, load_manifest
from edgeft.outputs import check_output
from edgeft.reporter import Reporter
from edgeft.run import checkpoints
from edgeft.run.record import RUN_FILE, RunRecord
from edgeft.training.overfitting import describe, overfitting_since
from edgeft.training.schedule import SCHEDULES, learning_rate

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class TrainConfig:
    """Hyper-parameters of a run; saved in run.json so --resume can check it is the same run."""

    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "linear"
    warmup: float = 0.1  # fraction of all optimizer steps
    weight_decay: float = 0.01
    l2sp: float | None = None  # L2-SP strength; None: the export's (see edgeft.exporting.l2sp)
    accumulate: int = 1
    seed: int = 0
    patience: int | None = None
    metric: str | None = None
    checkpoint_every: int | None = None
    cache: bool = True
    cache_mb: int = 128  # beyond it the cache is a file read per batch (see edgeft.data.cache)
    bucket: bool = True
    micro_batch_tokens: int = 768  # a batch padded beyond this runs in pieces (same update, less memory; 0: never)
    keep: int = 2
    val_fraction: float = 0.1


def _run_record(manifest: Manifest, data: DataOptions, config: TrainConfig, run_dir: Path) -> RunRecord:
    kept = data.kept(run_dir) if data.keep_in_run else data
    return RunRecord.create(run_dir, manifest.folder, sha256_file(manifest.folder / MANIFEST_NAME), kept.train,
                            kept.val, {"text_column": data.text_column, "label_column": data.label_column},
                            asdict(config), hashed=(data.train, data.val))


def _keep_data(data: DataOptions, run_dir: Path) -> None:
    """Copy data given in memory into the run folder, where the run record says it is."""
    kept = data.kept(run_dir)
    try:
        for source, target in ((data.train, kept.train), (data.val, kept.val)):
            if source is not None:
                target.parent.mkdir(exist_ok=True)
                atomic_write_bytes(target, source.read_bytes())
    except OSError as exc:
        raise write_failed(run_dir / KEPT_DATA, exc) from exc


def _prepare_run_dir(run_dir: Path, record: RunRecord, resume: bool, force: bool) -> None:
    run_file = run_dir / RUN_FILE
    if resume:
        if not run_file.is_file():
            raise EdgeftError(f"There is no run to resume in {run_dir}.", where=str(run_dir),
                              hint="start the run without --resume, or give the --run-dir of the interrupted run.")
        differs = RunRecord.read(run_dir).same_run(record, asdict(TrainConfig()))
        if differs:
            raise EdgeftError(f"--resume: this run was started with another {differs}.", where=str(run_file),
                              hint="resume with the same artifacts, data and options, or start a new --run-dir.")
        return
    check_output(run_dir, force, "run", "--run-dir",
                 keep_hint="pass --resume to continue it, --force to start over, or another --run-dir.")
    try:
        if run_dir.exists() and any(run_dir.iterdir()):  # an edgeft run, and --force
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # read-only, not permitted, a file in the way
        raise write_failed(run_dir, exc) from exc
    record.write()


def _check_run_dir(run_dir: Path) -> None:
    """Refuse to go on when the run folder vanished (or was replaced) while training: writing would
    recreate a run without its record, and the summary would name checkpoints that do not exist."""
    if not (run_dir / RUN_FILE).is_file():
        raise EdgeftError(f"The run folder {run_dir} disappeared while training (its {RUN_FILE} is gone).",
                          where=str(run_dir), hint="nothing more was written; start the run again (with a --run-dir "
                                                   "that stays in place while it trains).")


def _open_trainer(manifest: Manifest, config: TrainConfig, run_dir: Path, threads: int | None,
                  checkpoint: Path | None, prefix: str, backend: str) -> Trainer:
    return open_trainer(manifest, backend, threads=threads, checkpoint=checkpoint, prefix=prefix,
                        weight_decay=config.weight_decay, work_dir=run_dir, l2sp=config.l2sp)


def train(artifacts: Path, data: DataOptions, run_dir: Path, config: TrainConfig = TrainConfig(),
          threads: int | None = None, resume: bool = False, force: bool = False,
          reporter: Reporter | None = None, backend: str = "auto",
          initial: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Fine-tune the artifacts' trainable layers on ``data``; returns the run summary.

    ``initial``: trainable values to start from instead of the exported ones (a federated round
    starts from the global model); a resumed run continues from its checkpoint instead.

    ``backend`` is ``auto`` (ORT's training API when it imports, else portable), ``ort-training``
    or ``portable``; it is not part of the run's config, so a run resumes in either backend.
    """
    import onnxruntime as ort

    artifacts, run_dir = Path(artifacts), Path(run_dir)
    reporter = reporter or Reporter()
    manifest = check_fields(load_manifest(artifacts, kind=TRAINABLE_KINDS))
    task, labels = manifest.data["task"], manifest.data["labels"]["names"]
    metric = config.metric or metrics.default_metric(task)
    if metric not in metrics.task_metrics(task):
        raise EdgeftError(f"{metric!r} is not a metric the {task} task reports.", where="--metric",
                          hint=f"use one of {', '.join(metrics.task_metrics(task))}.")
    if config.schedule not in SCHEDULES:
        raise EdgeftError(f"Unknown learning-rate schedule {config.schedule!r}.", where="--schedule",
                          hint=f"use one of {', '.join(SCHEDULES)}.")
    chosen = resolve_backend(backend, manifest)
    if manifest.data["optimizer"] == "sgd" and config.weight_decay:
        raise EdgeftError("ONNX Runtime's SGD optimizer has no weight decay.", where="--weight-decay",
                          hint="pass --weight-decay 0, or export with --optimizer adamw.")
    check_l2sp(manifest, config.l2sp)
    contrastive = task == "embedding"  # the loss couples a batch's examples: batches are made of groups
    if contrastive and config.batch_size < 4:
        raise EdgeftError(f"The embedding task learns from the other examples of a batch (in-batch negatives): a "
                          f"batch of {config.batch_size} holds one group, whose texts have no negative.",
                          where="--batch-size", hint="use --batch-size 16 or more (larger batches give more negatives).")
    train_set, val_set = load_examples(manifest, data, config.val_fraction, config.seed, reporter)
    if contrastive and val_set is not None:
        metrics.require_queries(val_set.labels(np.arange(len(val_set))), "validation text",
                                str(data.val) if data.val is not None else "--val-fraction")
    record = _run_record(manifest, data, config, run_dir)
    _prepare_run_dir(run_dir, record, resume, force)
    if data.keep_in_run and not resume:
        _keep_data(data, run_dir)
    latest = checkpoints.latest(run_dir) if resume else None
    state = checkpoints.load_state(latest) if latest else checkpoints.LoopState()
    use_cache = config.cache and bool(manifest.data.get("cache", {}).get("available"))
    trainer = _open_trainer(manifest, config, run_dir, threads, latest, TAIL_PREFIX if use_cache else "", chosen)
    if initial is not None and latest is None:
        trainer.load_parameters(initial)
    if resume:
        reporter.message(f"resuming from {latest.name if latest else 'the start'} "
                         f"(epoch {state.epoch}, step {state.step}) with the {chosen} backend")
    examples: Examples = train_set
    val_examples: Examples | None = val_set
    cache_started = time.perf_counter()
    if use_cache:
        reporter.message("running the frozen part once over the data (frozen-prefix cache)")
        budget = config.cache_mb * 2**20
        shutil.rmtree(run_dir / "cache", ignore_errors=True)  # spill files of a killed run
        cached = CachedExamples(train_set, manifest, threads, budget, run_dir / "cache")
        examples = cached
        if val_set is not None:
            val_examples = CachedExamples(val_set, manifest, threads, max(budget - cached.nbytes, 0), run_dir / "cache")
        reporter.message(f"cache: {cached.nbytes / 2**20:.1f} MiB{' (spilled to disk)' if cached.spilled else ''}")
    elif config.cache and not manifest.data.get("cache", {}).get("available"):
        reporter.message(f"frozen-prefix cache not available: {manifest.data.get('cache', {}).get('reason', 'old artifacts')}")
    cache_seconds = time.perf_counter() - cache_started
    groups = examples.labels(np.arange(len(examples))) if contrastive else None

    def epoch_steps(epoch: int) -> int:
        """Optimizer steps of an epoch (grouped batches vary in number from epoch to epoch)."""
        batches = len(grouped_batches(groups, config.batch_size, np.random.default_rng([config.seed, epoch]))) \
            if contrastive else math.ceil(len(examples) / config.batch_size)
        return math.ceil(batches / config.accumulate)

    if config.max_steps:
        total_steps, epochs, counted = config.max_steps, 0, 0
        while counted < total_steps:
            counted, epochs = counted + epoch_steps(epochs), epochs + 1
    else:
        epochs = config.epochs
        total_steps = sum(epoch_steps(epoch) for epoch in range(epochs))
    warmup = int(round(config.warmup * total_steps))
    lr_scale = 1.0 / config.accumulate if manifest.data["optimizer"] == "sgd" else 1.0
    num_labels = len(labels)

    def diverged(what: str) -> EdgeftError:
        last = checkpoints.latest(run_dir)
        return EdgeftError(f"Training diverged: {what} at epoch {state.epoch + 1}, step {state.step}.",
                           where=str(run_dir), hint="lower --lr (or raise --warmup); the last good checkpoint is "
                                                    f"{last if last else 'the exported one'} and is untouched.")

    def checkpoint(folder: Path, force_replace: bool = False) -> None:
        _check_run_dir(run_dir)
        if not all(np.isfinite(value).all() for value in trainer.parameters().values()):
            raise diverged("the weights became infinite or NaN")
        checkpoints.save(folder, trainer, state, force=force_replace)

    if not state.history and val_examples is not None:
        before = evaluate(trainer, val_examples, task, num_labels, config.batch_size)
        state.history.append({"epoch": 0, "step": 0, "val": before})
        reporter.message(f"before training: {_describe(before)}")
    reporter.start(total_steps, state.step, epochs)
    started = time.perf_counter() - state.seconds
    stop = False
    for epoch in range(state.epoch, epochs):
        rng = np.random.default_rng([config.seed, epoch])
        order = grouped_batches(groups, config.batch_size, rng) if contrastive \
            else length_bucketed_batches(examples.lengths, config.batch_size, rng, config.bucket)
        train_losses: list[float] = []
        window_start, window_examples = time.perf_counter(), 0
        for index in range(state.batch, len(order)):
            pieces = token_pieces(order[index], examples.lengths, config.micro_batch_tokens) \
                if trainer.weighted_steps and not contrastive else [order[index]]
            loss = 0.0
            for piece in pieces:
                batch = examples.inputs(piece)
                batch["labels"] = examples.labels(piece)
                ort.set_seed(config.seed * 1_000_003 + state.micro)  # dropout masks follow the step: resumable
                weight = len(piece) / len(order[index])
                piece_loss, _ = (trainer.train_step(batch, weight) if len(pieces) > 1 else trainer.train_step(batch))
                loss += weight * piece_loss
                state.micro += 1
            if not math.isfinite(loss):
                raise diverged(f"the loss became {loss}")
            train_losses.append(loss)
            state.loss_sum, state.loss_count = state.loss_sum + loss, state.loss_count + 1
            state.examples_seen += len(order[index])
            window_examples += len(order[index])
            state.batch = index + 1
            if state.batch % config.accumulate == 0 or state.batch == len(order):
                rate = learning_rate(state.step, total_steps, config.lr, warmup, config.schedule)
                trainer.set_learning_rate(rate * lr_scale)
                trainer.optimizer_step()
                state.step += 1
                elapsed = time.perf_counter() - window_start
                reporter.step(state.step, float(np.mean(train_losses[-20:])), window_examples / max(elapsed, 1e-9), rate)
                if config.checkpoint_every and state.step % config.checkpoint_every == 0 and state.batch < len(order):
                    state.seconds = time.perf_counter() - started
                    checkpoint(checkpoints.step_folder(run_dir, state.step))
                    checkpoints.prune(run_dir, config.keep)
                if state.step >= total_steps:
                    break
        state.epoch, state.batch = epoch + 1, 0
        entry: dict[str, Any] = {"epoch": epoch + 1, "step": state.step, "train_loss": state.loss_sum / state.loss_count
                                 if state.loss_count else None, "lr": learning_rate(max(state.step - 1, 0), total_steps,
                                                                               config.lr, warmup, config.schedule)}
        state.loss_sum, state.loss_count = 0.0, 0
        if val_examples is not None:
            entry["val"] = evaluate(trainer, val_examples, task, num_labels, config.batch_size)
            value = entry["val"][metric]
            if metrics.better(metric, value, state.best):
                state.best, state.best_epoch, state.bad_epochs = value, epoch + 1, 0
                checkpoint(run_dir / checkpoints.BEST, force_replace=True)
            else:
                state.bad_epochs += 1
            stop = config.patience is not None and state.bad_epochs >= config.patience
        state.history.append(entry)
        since = overfitting_since(state.history)
        if since is not None and overfitting_since(state.history[:-1]) is None:  # said once, when it starts
            reporter.message(describe(state.history, since, state.best_epoch))
        state.seconds = time.perf_counter() - started
        entry["seconds"] = round(state.seconds, 3)
        _check_run_dir(run_dir)
        atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(h) + "\n" for h in state.history))
        checkpoint(checkpoints.step_folder(run_dir, state.step), force_replace=True)
        checkpoints.prune(run_dir, config.keep)
        reporter.epoch(entry)
        if stop:
            reporter.message(f"early stopping: no better {metric} for {config.patience} epoch(s)")
            break
        if state.step >= total_steps:
            break
    reporter.finish()
    for holder in (examples, val_examples):
        if isinstance(holder, CachedExamples):
            holder.close()
    summary = {
        "run_dir": str(run_dir), "artifacts": str(artifacts), "task": task, "metric": metric,
        "train_examples": len(train_set), "val_examples": len(val_set) if val_set is not None else 0,
        "skipped_rows": train_set.records.skipped + (val_set.records.skipped if val_set is not None else []),
        "epochs": state.epoch, "steps": state.step, "seconds": round(state.seconds, 3),
        "cache_seconds": round(cache_seconds, 3),  # the frozen-prefix pass, not in "seconds"
        "examples_per_second": round(state.examples_seen / max(state.seconds, 1e-9), 1),
        "backend": chosen, "l2sp": trainer.l2sp if manifest.l2sp is not None else None, "cache": use_cache,
        "artifact_set": "tail" if use_cache else "full", "peak_rss_mb": round(peak_rss_mb(), 1),
        "before": state.history[0].get("val") if state.history and state.history[0]["epoch"] == 0 else None,
        "after": state.history[-1].get("val") if state.history else None,
        "best": {"epoch": state.best_epoch, metric: state.best}, "early_stopped": stop,
        "overfitting_since_epoch": overfitting_since(state.history),
        "checkpoint": str(run_dir / checkpoints.BEST if state.best_epoch else checkpoints.latest(run_dir)),
    }
    _check_run_dir(run_dir)
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float))
