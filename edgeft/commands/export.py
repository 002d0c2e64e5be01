"""``edgeft export``: the host-side step (needs the ``export`` extra: torch, transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeft.tasks import LOSSES, OPTIMIZERS, TASKS


@click.command(name="export", context_settings={"max_content_width": 100})
@click.argument("model", required=False)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Artifact folder [default: artifacts/NAME].")
@click.option("--name", help="Name recorded in the manifest [default: from the model].")
@click.option("--train", "train", default="last:1", show_default=True,
              help="What trains: head, last:N (last N blocks + head) or a regular expression on parameter names.")
@click.option("--task", type=click.Choice(list(TASKS)),
              help="What the model learns [default: the loss's, classification]. embedding fine-tunes a text "
                   "encoder's own sentence embedding (mean pooling, normalised, no head) on texts that belong "
                   "together: (text, group) rows or (text, positive) pairs.")
@click.option("--loss", type=click.Choice(list(LOSSES)),
              help="Training loss [default: the task's: cross-entropy, bce, mse or contrastive].")
@click.option("--optimizer", type=click.Choice(list(OPTIMIZERS)), default="adamw", show_default=True)
@click.option("--labels", "labels_file", type=click.Path(path_type=Path),
              help="Label names: a .txt file (one per line) or a .json list. Sets the number of outputs.")
@click.option("--num-labels", type=click.IntRange(min=1), help="Number of labels when no --labels file is given.")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True,
              help="Longest token sequence for text models.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:DTYPE:DIMS",
              help="Input of a PyTorch factory, e.g. x:float32:batch,16 (repeat per input).")
@click.option("--modality", type=click.Choice(["text", "image", "audio"]),
              help="For a transformers folder: force text, image or audio [default: detected].")
@click.option("--clip-seconds", type=click.FloatRange(min=0.05, max=600), metavar="SECONDS",
              help="Audio models that read the waveform (Wav2Vec2, HuBERT, WavLM): the clip length they hear; longer "
                   "clips are cut, shorter ones padded [default: 1].")
@click.option("--no-dropout", is_flag=True, help="Export the trainable part without dropout (deterministic steps).")
@click.option("--l2sp", type=click.FloatRange(min=0), metavar="STRENGTH",
              help="Add an L2-SP term to the training loss: STRENGTH/2 * ||w - w_pretrained||^2 over the "
                   "pretrained trainable tensors (a default; `edgeft train --l2sp` changes it).")
@click.option("--format", "formats", type=click.Choice(["portable", "ort-training"]), multiple=True,
              help="Training formats to write (repeat for both) [default: portable, standard-ONNX graphs that train "
                   "on any onnxruntime]. ort-training adds ONNX Runtime's training artifacts for its 1.19 "
                   "training runtimes (needs the ort-training extra).")
@click.option("--device", help="Write a device package for this profile (a name from `edgeft devices`, a .toml path, "
                                "or auto) instead of the artifact folder: the frozen prefix quantized for it, the "
                                "tail's training graphs, nothing else [default folder: artifacts/NAME-DEVICE].")
@click.option("--guard-data", type=click.Path(path_type=Path),
              help="Labelled examples (CSV/TSV/JSONL, a folder of images or WAV files, as for train) that check the "
                   "package's quantized prefix: a linear probe on its features must stay within the profile's "
                   "accuracy tolerance.")
@click.option("--max-drop", type=click.FloatRange(min=0),
              help="Accuracy drop (points) the prefix guard accepts [default: the profile's].")
@click.option("--text-column", default="text", show_default=True, help="Text column of --guard-data.")
@click.option("--label-column", default="label", show_default=True, help="Label column of --guard-data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for new heads and sample inputs.")
@click.option("--force", is_flag=True, help="Replace an existing output folder (only once the new one is complete).")
@click.option("--list-parameters", is_flag=True,
              help="List the model's parameter names (what a --train regular expression matches), their blocks "
                   "and what --train selects, and stop (nothing is written).")
@click.option("-v", "--verbose", is_flag=True, help="List every parameter tensor, not one row per block.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout instead of tables.")
def command(model: str | None, output: Path | None, name: str | None, train: str, task: str | None,
            loss: str | None, optimizer: str,
            labels_file: Path | None, num_labels: int | None, max_length: int, inputs: tuple[str, ...],
            modality: str | None, clip_seconds: float | None, no_dropout: bool, l2sp: float | None, formats: tuple[str, ...], device: str | None,
            guard_data: Path | None, max_drop: float | None, text_column: str, label_column: str, seed: int,
            force: bool, list_parameters: bool, verbose: bool, as_json: bool) -> None:
    """Turn a pretrained MODEL into training artifacts in which only the chosen last layers train.

    MODEL is a built-in name (default: minilm, all-MiniLM-L6-v2 with mean pooling and a new
    linear head), a Hugging Face transformers folder (text, image or audio classification: the
    device reproduces its tokenizer, image processor or feature extractor), an ONNX
    forward model (.onnx), or a PyTorch factory package.module:factory (with --input).

    The training graphs (standard ONNX operators, gradients by onnx-ad) are loaded and trained
    for one step before success is reported, and the folder appears only when complete.

    \b
    Examples:
      edgeft export --labels labels.txt
      edgeft export ./my-bert --train last:2 --num-labels 5 -o artifacts/bert
      edgeft export model.onnx --train 'classifier|layer\\.11\\.'
      edgeft export mypkg.nets:build --input x:float32:batch,16 --loss mse
      edgeft export --labels labels.txt --train last:2 --l2sp 0.01
      edgeft export --task embedding --train last:1   # on-device search over your own texts
      edgeft export ./my-wav2vec2 --labels words.txt --clip-seconds 1   # keyword spotting
      edgeft export --labels labels.txt --format portable --format ort-training
      edgeft export --labels labels.txt --device raspberry-pi-5 --guard-data train.csv
      edgeft export ./my-bert --list-parameters --train 'layer\\.11\\.'   # check a regex first
    """
    from edgeft import api
    from edgeft.report import parameter_table, stderr, stdout

    if (guard_data or max_drop is not None) and device is None:
        raise click.UsageError("--guard-data and --max-drop check a device package's prefix: give --device too.")
    if list_parameters:
        from edgeft.exporting.artifacts import ExportOptions
        from edgeft.labels import read_label_file

        _list_parameters(ExportOptions(model=model, train=train, task=task, loss=loss, label_names=read_label_file(labels_file)
                                       if labels_file else [], num_labels=num_labels, max_length=max_length,
                                       inputs=list(inputs), modality=modality, clip_seconds=clip_seconds, seed=seed,
                                       dropout=not no_dropout),
                         as_json)
        return

    def run(progress=None):  # -> ExportResult
        return api.export(model, labels=labels_file, num_labels=num_labels, train=train, output=output, device=device,
                          guard_data=guard_data, task=task, loss=loss, optimizer=optimizer, max_length=max_length, inputs=inputs,
                          modality=modality, clip_seconds=clip_seconds, formats=formats or ("portable",), dropout=not no_dropout, l2sp=l2sp,
                          seed=seed, max_drop=max_drop, text_column=text_column, label_column=label_column,
                          force=force, name=name, progress=progress).built

    if as_json:
        click.echo(json.dumps(run().summary(), indent=2))
        return
    with stderr.status("exporting") as status:
        result = run(lambda text: status.update(f"{text}..."))
    stdout.print(parameter_table([(t.name, t.numel, t.trainable) for t in result.tensors],
                                 title=f"Parameters of {result.manifest.data['name']} (--train {train})",
                                 detailed=verbose))
    for line in result.notes + result.repairs:
        stderr.print(f"  [cyan]•[/] {line}")
    stdout.print(f"[green]✓[/] one training step ran (loss {result.smoke_loss:.4f})")
    if result.manifest.kind == "package":
        size = result.manifest.data["size"]
        stdout.print(f"[bold green]Device package for {result.manifest.data['device']['name']} written to "
                     f"{result.folder}[/] ({size['package_mb']:.1f} MB, {size['ratio']:.2f}x the fp32 model) "
                     f"in {result.seconds:.1f} s")
    else:
        stdout.print(f"[bold green]Training artifacts written to {result.folder}[/] in {result.seconds:.1f} s")


def _list_parameters(options, as_json: bool) -> None:  # options: ExportOptions
    """The parameter names --train matches, as a table (or JSON) on stdout."""
    from rich.markup import escape
    from rich.table import Table

    from edgeft.exporting.parameters import list_parameters
    from edgeft.report import stderr, stdout

    listing = list_parameters(options)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    rows, prefix = listing["parameters"], listing["block_prefix"]
    title = f"Parameters of {listing['model']} in forward order; --train {listing['train']}"
    table = Table(title=escape(title), title_justify="left")
    longest = max((len(row["name"]) for row in rows), default=9)
    table.add_column("parameter", min_width=min(longest, 90), overflow="fold")  # whole names: they are the point
    table.add_column("block")
    table.add_column("shape")
    table.add_column("trains")
    for row in rows:
        block = row["block"]
        shown = f"{block[len(prefix):]} of {listing['blocks']}" if prefix and block.startswith(prefix) else \
            block if block == "head" else ""
        table.add_row(escape(row["name"]), shown, "x".join(map(str, row["shape"])) or "scalar",
                      "[bold green]yes[/]" if row["trainable"] else "[dim]no[/]")
    stdout.print(table)
    if listing["problem"]:
        stderr.print(f"[yellow]note:[/] {escape(listing['problem'])}")
