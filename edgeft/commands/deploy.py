"""``edgeft deploy``: a quantized, checked, measured bundle for a device profile."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="deploy", context_settings={"max_content_width": 100})
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True,
              help="Device profile: a name from `edgeft devices`, a .toml path, or auto (this machine; for a run "
                   "of a device package: the package's profile).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle folder [default: artifacts/bundles/NAME-DEVICE].")
@click.option("--val", type=click.Path(path_type=Path), help="Labelled data for the accuracy check [default: the run's].")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="A checkpoint (folder, ORT checkpoint or trainable.npz) to deploy [default: the run's best].")
@click.option("--max-drop", type=click.FloatRange(min=0), help="Allowed accuracy drop in points [default: the profile's].")
@click.option("--sequence", type=click.IntRange(min=1), default=64, show_default=True, help="Sequence length for latency.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing bundle folder (only once the new one is complete).")
@click.option("-v", "--verbose", is_flag=True, help="Also show ONNX Runtime's own warnings (quantizer, graph optimizer).")
@click.option("--json", "as_json", is_flag=True, help="Print the deploy report as JSON on stdout.")
def command(source: Path, device: str, output: Path | None, val: Path | None, checkpoint: Path | None,
            max_drop: float | None, sequence: int, text_column: str, label_column: str, force: bool, verbose: bool,
            as_json: bool) -> None:
    """Turn SOURCE (a run folder from edgeft train, or an artifact folder) into a bundle for a device.

    A run of a device package keeps the package's frozen prefix (what it trained on) and
    quantizes only the trained tail, which is quick and light enough for the device itself.

    The trained weights go into a clean, constant-folded (and for transformers, fused) fp32
    graph; it is quantized with the profile's recipe; fp32 and quantized are evaluated on the
    validation data, and when the drop exceeds the profile's tolerance safer recipes are tried
    in turn. The bundle holds the model, tokenizer or preprocessor config, labels, the profile,
    a manifest with sha256 of every file, and a report (size, latency, accuracy).

    \b
    Examples:
      edgeft deploy artifacts/runs/minilm-raspberry-pi-5         # a package's run: its own profile
      edgeft deploy artifacts/runs/minilm --device raspberry-pi-5
      edgeft deploy artifacts/runs/minilm --device ./my-board.toml --max-drop 0.5
      edgeft deploy artifacts/minilm --val data/val.csv --device x86-64-avx2
      edgeft deploy artifacts/runs/minilm --checkpoint artifacts/runs/minilm/checkpoints/step-00000300
    """
    from edgeft import api
    from edgeft.ortcompat import runtime_logs
    from edgeft.report import stderr, stdout

    def run(progress=None) -> dict:
        return api.deploy(source, device=device, output=output, val=val, max_drop=max_drop, sequence=sequence,
                          checkpoint=checkpoint, text_column=text_column, label_column=label_column, force=force,
                          progress=progress).report

    with runtime_logs(shown=verbose):
        if as_json:
            click.echo(json.dumps(run(), indent=2))
            return
        with stderr.status("deploying") as status:
            report = run(lambda text: status.update(f"{text}..."))
    from rich.markdown import Markdown

    stdout.print(Markdown((Path(report["bundle"]) / "REPORT.md").read_text(encoding="utf-8")))
    stdout.print(f"[bold green]Bundle written to {report['bundle']}[/] in {report['seconds']:.1f} s")
