"""``edgeft evaluate``: metrics of an artifact folder, a trained run or a bundle on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeft.commands.common import data_options


@click.command(name="evaluate", context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="A checkpoint (folder, ORT checkpoint or trainable.npz) to evaluate [default: the run's best].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), help="Compute threads [default: ONNX Runtime's choice].")
@click.option("--backend", type=click.Choice(["auto", "ort-training", "portable"]), default="auto", show_default=True,
              help="Backend that runs the eval graph (see edgeft train --help).")
@data_options
@click.option("--by", metavar="COLUMN", help="Also report the metrics per value of this column of DATA (a slice: "
                                            "a user, a source, a dialect) and name the worst slice.")
@click.option("--reference", type=click.Path(path_type=Path),
              help="Texts unrelated to the task (.txt lines, or the text column of .csv/.tsv/.jsonl): also report how "
                   "far the fine-tuned outputs (embeddings) moved from the exported model's on them.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
def command(model: Path, data: Path, checkpoint: Path | None, batch_size: int, threads: int | None, backend: str,
            text_column: str, label_column: str, strict: bool, by: str | None, reference: Path | None,
            as_json: bool) -> None:
    """Evaluate MODEL (an artifact folder, a run folder from edgeft train, or a bundle from edgeft
    deploy, with onnxruntime alone) on DATA.

    Classification: loss, accuracy, macro-F1 and the confusion matrix; multi-label: exact-match
    accuracy and F1; regression: MAE and RMSE; embedding: retrieval, each example a query
    against the others, found when a member of its group (DATA's label column, or the other text
    of a pair) ranks first (recall@1), among the first 5 or 10, and the mean reciprocal rank.

    --reference FILE measures knowledge retention: the exported and the fine-tuned model run over
    FILE's texts (unrelated to the task) and the change is reported (embeddings: cosine similarity,
    pairwise-similarity correlation, nearest neighbour kept; classifiers: top label kept,
    probability shift).

    \b
    Examples:
      edgeft evaluate artifacts/runs/minilm data/test.csv
      edgeft evaluate artifacts/minilm data/test.csv          # before fine-tuning
      edgeft evaluate artifacts/runs/minilm test.jsonl --json | jq .accuracy
      edgeft evaluate artifacts/bundles/minilm-raspberry-pi-5 data/test.csv   # the quantized model
      edgeft evaluate artifacts/runs/minilm data/test.csv --by speaker    # per speaker, the worst named
      edgeft evaluate artifacts/runs/notes queries.csv --reference unrelated.txt   # what it kept
    """
    from rich.table import Table

    from edgeft import api
    from edgeft.report import stdout

    result = api.evaluate(model, data, checkpoint=checkpoint, batch_size=batch_size, threads=threads,
                          text_column=text_column, label_column=label_column, strict=strict, backend=backend,
                          by=by, reference=reference).record
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    title = f"{result['examples']} examples of {data}"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    stdout.print(table)
    confusion = result.get("confusion")
    if confusion and len(confusion) <= 20:
        matrix = Table(title="Confusion matrix (rows: true, columns: predicted)", title_justify="left")
        matrix.add_column("")
        names = result["labels"]
        for index in range(len(names)):
            matrix.add_column(str(index), justify="right")
        for index, row in enumerate(confusion):
            matrix.add_row(f"{index} {names[index]}", *[f"[bold]{v}[/]" if i == index else (str(v) if v else "·")
                                                      for i, v in enumerate(row)])
        stdout.print(matrix)
    if result.get("by"):
        _print_slices(result["by"])
    if result.get("retention"):
        _print_retention(result["retention"])


def _print_retention(found: dict) -> None:
    """The retention section: each measure, and what it means."""
    from rich.markup import escape
    from rich.table import Table

    from edgeft.report import stderr, stdout

    meaning = {"mean_cosine": "cosine of each text's embeddings before / after (1: unchanged)",
               "min_cosine": "the text that moved most",
               "similarity_correlation": "how the texts relate to each other, kept (1: as before)",
               "neighbour_kept": "texts whose nearest other text is unchanged",
               "top_label_kept": "texts whose top label is unchanged",
               "labels_kept": "texts whose labels above 0.5 are unchanged",
               "probability_shift": "how far the probabilities moved (0: not at all)",
               "mean_abs_change": "mean absolute change of the outputs",
               "relative_change": "that change over the outputs' spread"}
    table = Table(title=f"Retention on {found['texts']} reference texts of {escape(found['reference'])}",
                  title_justify="left")
    for column in ("measure", "value", "meaning"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for key, value in found.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}", meaning.get(key, ""))
    stdout.print(table)
    if found.get("note"):
        stderr.print(f"[yellow]note:[/] {escape(found['note'])}")


def _print_slices(by: dict) -> None:
    """The metrics of each slice (the "by" section of evaluate's record), worst first, then a
    line naming the worst."""
    from rich.markup import escape
    from rich.table import Table

    from edgeft.evaluation.metrics import HIGHER_IS_BETTER
    from edgeft.report import stdout

    metric = by["metric"]
    rows = sorted(by["slices"], key=lambda row: row[metric], reverse=not HIGHER_IS_BETTER[metric])
    table = Table(title=f"By {escape(by['column'])} (worst first)", title_justify="left")
    table.add_column(escape(by["column"]))
    table.add_column("examples", justify="right")
    keys = [k for k in rows[0] if k not in ("value", "examples")] if rows else []
    for key in keys:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(escape(row["value"] or "(empty)"), str(row["examples"]), *[f"{row[k]:.4f}" for k in keys])
    stdout.print(table)
    worst = next(row for row in rows if row["value"] == by["worst"])
    stdout.print(f"worst slice: {escape(by['column'])} = {escape(worst['value'] or '(empty)')} "
                 f"({metric} {worst[metric]:.4f} on {worst['examples']} examples)", highlight=False)
