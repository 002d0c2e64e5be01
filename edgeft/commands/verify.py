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
    version) and load them with the installed onnxruntime. Every folder is checked and reported;
    exits 1 with the reasons when one or more cannot be used.

    \b
    Examples:
      edgeft verify artifacts/minilm
      edgeft verify artifacts/bundles/* --json
    """
    import sys

    from rich.markup import escape

    from edgeft.errors import EdgeftError
    from edgeft.report import stdout
    from edgeft.verify import verify_folder

    results = []
    for folder in folders:
        try:
            results.append(verify_folder(folder))
        except EdgeftError as exc:
            results.append({"folder": str(folder), "ok": False,
                            "error": {"what": exc.what, "where": exc.where, "hint": exc.hint}})
    failed = [r for r in results if not r["ok"]]
    if as_json:
        click.echo(json.dumps(results, indent=2))  # a list, whatever the number of folders
    else:
        for result in results:
            if result["ok"]:
                stdout.print(f"[green]✓[/] {escape(result['folder'])} ({result['kind']}): "
                             + escape("; ".join(result["checks"])), highlight=False)
            else:
                stdout.print(f"[red]✗[/] {escape(result['folder'])}: {escape(result['error']['what'])}",
                             highlight=False)
        for result in failed:  # the reasons, as every edgeft error is shown
            error = result["error"]
            click.secho(f"error: {error['what']}", fg="red", err=True)
            for label, key in (("where", "where"), ("what to do", "hint")):
                if error[key]:
                    click.echo(f"  {label}: {error[key]}", err=True)
    if failed:
        sys.exit(1)
