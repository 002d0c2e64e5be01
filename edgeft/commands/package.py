"""``edgeft package``: a device package from an artifact folder (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="package", context_settings={"max_content_width": 100})
@click.argument("artifacts", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True,
              help="Device profile: a name from `edgeft devices`, a .toml path, or auto (this machine).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Package folder [default: artifacts/NAME-DEVICE].")
@click.option("--guard-data", type=click.Path(path_type=Path),
              help="Labelled examples that check the quantized prefix (a linear probe on its features).")
@click.option("--max-drop", type=click.FloatRange(min=0), help="Accuracy drop (points) the prefix guard accepts "
                                                                "[default: the profile's].")
@click.option("--text-column", default="text", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing package folder (only once the new one is complete).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def command(artifacts: Path, device: str, output: Path | None, guard_data: Path | None, max_drop: float | None,
            text_column: str, label_column: str, force: bool, as_json: bool) -> None:
    """Write the device package of ARTIFACTS (an artifact folder from edgeft export) for one device
    profile: the frozen prefix folded, fused and quantized as the profile says (checked on
    --guard-data, falling back to safer recipes), the tail's training graphs and initial values,
    labels, tokenizer or image config and the profile. One export, a package per device.

    \b
    Examples:
      edgeft package artifacts/minilm --device raspberry-pi-5 --guard-data data/train.csv
      edgeft package artifacts/minilm --device stm32mp25 -o packages/stm32
    """
    from edgeft import api
    from edgeft.report import stderr, stdout

    def build(progress=None):  # -> PackageResult
        return api.package(artifacts, device=device, guard_data=guard_data, output=output, max_drop=max_drop,
                           text_column=text_column, label_column=label_column, force=force, progress=progress).built

    if as_json:
        click.echo(json.dumps(build().summary(), indent=2))
        return
    with stderr.status("packaging") as status:
        result = build(lambda text: status.update(f"{text}..."))
    for line in result.notes:
        stderr.print(f"  [cyan]•[/] {line}")
    size = result.manifest.data["size"]
    stdout.print(f"[bold green]Device package for {result.manifest.data['device']['name']} written to {result.folder}[/] "
                 f"({size['package_mb']:.1f} MB, {size['ratio']:.2f}x the fp32 model) in {result.seconds:.1f} s")
