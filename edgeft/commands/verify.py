"""``edgeft verify``: exit 0 only when a folder is intact and loads in this environment."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="verify")
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def command(folders: tuple[Path, ...], as_json: bool) -> None:
    """Check artifact folders or bundles against their manifests (sha256 of every file, format
    version) and load them with the installed onnxruntime. Exits 1 with the reason when one
    cannot be used.

    \b
    Examples:
      edgeft verify artifacts/minilm
      edgeft verify artifacts/bundles/* --json
    """
    from edgeft.report import stderr
    from edgeft.verify import verify_folder

    results = [verify_folder(folder) for folder in folders]
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    for result in results:
        stderr.print(f"[green]✓[/] {result['folder']} ({result['kind']}): " + "; ".join(result["checks"]))
