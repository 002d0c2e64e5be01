"""``edgeft predict``: labels and scores from a bundle (an embedding bundle: vectors, or the
nearest entries of a corpus), with onnxruntime alone."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="predict", context_settings={"max_content_width": 100})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--text", "as_text", is_flag=True, help="Every input is a text, even one that looks like a file name.")
@click.option("--file", "as_file", is_flag=True, help="Every input is a file or folder (an error when it does not exist).")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Labels (with --corpus: corpus entries) shown per input.")
@click.option("--corpus", type=click.Path(path_type=Path),
              help="Embedding bundles: texts to search (.txt lines, or the text column of .csv/.tsv/.jsonl); each "
                   "input gets its --top-k nearest entries by cosine similarity.")
@click.option("--text-column", default="text", show_default=True, help="Text column of CSV/TSV/JSONL inputs.")
@click.option("--threads", type=click.IntRange(min=1), help="Compute threads [default: the bundle's profile].")
@click.option("--json", "as_json", is_flag=True, help="Print predictions as JSON on stdout.")
def command(bundle: Path, inputs: tuple[str, ...], as_text: bool, as_file: bool, top_k: int, corpus: Path | None,
            text_column: str, threads: int | None, as_json: bool) -> None:
    """Predict with BUNDLE for each of INPUTS: texts, or files (.txt lines, .csv/.tsv/.jsonl with a
    text column, images or WAV files and folders of them for image and audio bundles, .npz files
    of input arrays for bundles of models that take tensors).

    An input is a file when it exists or ends with a data file's suffix (.txt, .csv, .tsv,
    .jsonl, .npz, an image's, .wav), else a text; a missing file is an error. --text and --file
    decide for every input instead.

    An embedding bundle (export --task embedding) prints each input's normalised vector (in full
    with --json), or with --corpus FILE the nearest entries of FILE.

    \b
    Examples:
      edgeft predict artifacts/bundles/smart-home "turn off the kitchen lights"
      edgeft predict artifacts/bundles/smart-home messages.txt --json
      edgeft predict artifacts/bundles/smart-home --text "open report.csv"
      edgeft predict artifacts/bundles/sensor-model readings.npz
      edgeft predict artifacts/bundles/keywords clips/   # every .wav under clips/
      edgeft predict artifacts/bundles/notes-search "where did I park" --corpus notes.txt
    """
    from rich.markup import escape
    from rich.table import Table

    from edgeft.deployment.bundle import Bundle, read_items
    from edgeft.errors import EdgeftError
    from edgeft.report import stdout

    if as_text and as_file:
        raise EdgeftError("--text and --file contradict each other.", where="--text / --file",
                          hint="pass one of them, or neither to let edgeft tell texts from files.")
    model = Bundle(bundle, threads=threads)
    skipped: list[str] = []
    items = read_items(list(inputs), model.manifest.data["modality"], text_column, as_text=as_text, as_file=as_file,
                       skipped=skipped)
    for place in skipped:  # a note, on stderr: stdout holds the predictions
        click.echo(f"  • skipped {place}", err=True)
    if corpus is not None:
        from edgeft.data.records import read_texts

        if not corpus.is_file():
            raise EdgeftError(f"The corpus {corpus} does not exist.", where=str(corpus), hint="check the path.")
        corpus_skipped: list[str] = []
        predictions = model.search(items, read_texts(corpus, text_column, corpus_skipped), top_k)
        for place in corpus_skipped:
            click.echo(f"  • skipped {place}", err=True)
    elif model.manifest.data["modality"] == "tensor":
        places, values = model.predict_npz(items)
        predictions = [model.prediction(place, row) for place, row in zip(places, values)]
    else:
        predictions = model.predict(items)
    results = []
    for p in predictions:
        if corpus is not None:
            results.append({"input": p.input, "matches": [{"text": text, "score": round(score, 6)}
                                                          for text, score in p.matches]})
            continue
        if model.task == "embedding":
            results.append({"input": p.input, "embedding": [round(v, 7) for v in p.values or []]})
            continue
        if p.values is not None:
            results.append({"input": p.input, "values": [round(v, 6) for v in p.values]})
            continue
        top = p.top(top_k) if model.task == "classification" else list(p.scores.items())
        results.append({"input": p.input, "label": p.label,
                        "top": [{"label": label, "score": round(score, 6)} for label, score in top]})
    if as_json:
        click.echo(json.dumps(results, indent=2))  # a list, whatever the number of inputs
        return
    table = Table(show_header=True)
    table.add_column("input")
    table.add_column("nearest in the corpus" if corpus is not None else
                     "embedding" if model.task == "embedding" else "prediction")
    for result in results:
        shown = ", ".join(f"{t['label']} {t['score']:.2f}" for t in result.get("top", [])) or \
            ", ".join(f"{v:.4f}" for v in result.get("values", [])) or \
            "\n".join(f"{m['score']:.3f}  {m['text']}" for m in result.get("matches", [])) or \
            _vector(result.get("embedding")) or "(no label above 0.5)"
        table.add_row(escape(result["input"]), escape(shown))
    stdout.print(table)


def _vector(values: list[float] | None) -> str:
    """An embedding, shortened for a table (--json prints it whole)."""
    if not values:
        return ""
    head = ", ".join(f"{v:.4f}" for v in values[:4])
    return f"{len(values)} dimensions: {head}, ... (--json for all)"
