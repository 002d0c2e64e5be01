"""``edgeft train``: fine-tune on the device (onnxruntime and numpy only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeft.commands.common import data_options
from edgeft.training.schedule import SCHEDULES


@click.command(name="train", context_settings={"max_content_width": 100})
@click.argument("artifacts", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--val", type=click.Path(path_type=Path), help="Validation data [default: a stratified split of DATA].")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of DATA held out for validation when --val is not given (0: none).")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Run folder [default: artifacts/runs/NAME].")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after this many optimizer steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="linear", show_default=True)
@click.option("--warmup", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="Warm-up share of all steps.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.01, show_default=True, help="AdamW decoupled weight decay.")
@click.option("--l2sp", type=click.FloatRange(min=0),
              help="L2-SP strength: pull the trainable pretrained weights toward their start (needs artifacts "
                   "exported with --l2sp) [default: the export's; 0: off].")
@click.option("--accumulate", type=click.IntRange(min=1), default=1, show_default=True, help="Batches per optimizer step.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data order, split and dropout.")
@click.option("--threads", type=click.IntRange(min=1), help="Compute threads [default: ONNX Runtime's choice].")
@click.option("--backend", type=click.Choice(["auto", "ort-training", "portable"]), default="auto", show_default=True,
              help="ort-training: ONNX Runtime's training API; portable: the export's standard-ONNX training "
                   "graphs on any onnxruntime (Linux aarch64 too); auto: the first when it imports.")
@click.option("--patience", type=click.IntRange(min=1), help="Stop after N epochs without a better validation metric.")
@click.option("--metric", help="Validation metric for early stopping and the best checkpoint [default: accuracy / rmse].")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Also checkpoint every N optimizer steps.")
@click.option("--no-cache", is_flag=True, help="Train through the full graph instead of caching the frozen part.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=128, show_default=True,
              help="Memory budget of the activation cache; beyond it the cache is a file on disk, read back "
                   "per batch (through the OS page cache, which the kernel can reclaim).")
@click.option("--no-bucket", is_flag=True, help="Do not group examples of similar length into batches.")
@click.option("--micro-batch-tokens", type=click.IntRange(min=0), default=768, show_default=True,
              help="Run a batch padded beyond this many tokens in pieces, gradients weighted by their share: the "
                   "same update with the activation memory of a short batch (portable backend; 0: never).")
@data_options
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --run-dir from its last checkpoint.")
@click.option("--force", is_flag=True, help="Start over in a run folder that already holds a run.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
def command(artifacts: Path, data: Path, val: Path | None, val_fraction: float, run_dir: Path | None, epochs: int,
            max_steps: int | None, batch_size: int, lr: float, schedule: str, warmup: float, weight_decay: float,
            l2sp: float | None, accumulate: int, seed: int, threads: int | None, backend: str, patience: int | None,
            metric: str | None,
            checkpoint_every: int | None, no_cache: bool, cache_mb: int, no_bucket: bool, micro_batch_tokens: int,
            text_column: str,
            label_column: str, strict: bool, resume: bool, force: bool, as_json: bool) -> None:
    """Fine-tune the trainable layers of ARTIFACTS on DATA, on this machine's CPU.

    DATA is a CSV, TSV or JSONL file with a text and a label column, a folder of images or WAV
    files with one subfolder per class (or a table with their `path` and a label column), or an
    .npz file of model inputs and `labels`. For an embedding model
    (export --task embedding) the label column names each text's group (texts that should embed
    close together), or the file has a `positive` column instead: (text, positive) pairs. When only the last layers
    train, the frozen part runs once per example and later epochs cost only the tail.
    Checkpoints are written after every epoch; a killed run continues with --resume, with either
    backend.

    \b
    Examples:
      edgeft train artifacts/minilm data/train.csv --val data/val.csv
      edgeft train artifacts/minilm notes.jsonl --epochs 10 --patience 2 --lr 3e-4
      edgeft train artifacts/minilm data.csv --run-dir runs/a --resume
      edgeft train artifacts/minilm few.csv --l2sp 0.1   # few examples: stay near the pretrained weights
      edgeft train artifacts/minilm data.csv --backend portable   # plain onnxruntime, e.g. aarch64
      edgeft train artifacts/minilm-embedding pairs.jsonl --epochs 8 --lr 3e-4   # {"text": ..., "positive": ...}
    """
    from edgeft import api
    from edgeft.progress import RichReporter, summary_table
    from edgeft.report import stdout
    from edgeft.training.loop import TrainConfig

    config = TrainConfig(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, schedule=schedule,
                         warmup=warmup, weight_decay=weight_decay, l2sp=l2sp, accumulate=accumulate, seed=seed,
                         patience=patience,
                         metric=metric, checkpoint_every=checkpoint_every, cache=not no_cache, cache_mb=cache_mb,
                         bucket=not no_bucket, micro_batch_tokens=micro_batch_tokens, val_fraction=val_fraction)
    folder = run_dir or Path("artifacts") / "runs" / Path(artifacts).resolve().name
    reporter = None if as_json else RichReporter()
    try:
        summary = api.train(artifacts, data, val=val, run_dir=folder, config=config, threads=threads, backend=backend,
                            resume=resume, force=force, text_column=text_column, label_column=label_column,
                            strict=strict, progress=reporter).summary
    except KeyboardInterrupt:
        raise _interrupted(folder) from None
    finally:
        if reporter is not None:
            reporter.finish()  # stop the progress bar before any message
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        stdout.print(summary_table(summary))


def _interrupted(folder: Path):  # -> Interrupted
    """What Ctrl-C kept: the run's finished checkpoints, and how to continue from the last one."""
    from edgeft.errors import Interrupted
    from edgeft.run import checkpoints
    from edgeft.training.loop import RUN_FILE

    if not (folder / RUN_FILE).is_file():
        return Interrupted("Interrupted before training started.", where=str(folder),
                           hint="nothing was written; run the command again.")
    latest = checkpoints.latest(folder)
    kept = f"its last checkpoint, {latest.name}" if latest else "no checkpoint yet (it starts over)"
    return Interrupted(f"Interrupted; the run folder keeps {kept}.", where=str(folder),
                       hint="run the same command with --resume to continue exactly where the last checkpoint "
                            "left off.")
