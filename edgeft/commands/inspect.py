"""``edgeft inspect``: show a manifest and check every file against its sha256 (device side)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command(name="inspect")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and the check result as JSON.")
def command(folder: Path, as_json: bool) -> None:
    """Print the manifest of an artifact FOLDER (or bundle) and verify every file's sha256.

    Exits with status 1 when a file is missing or was changed.

    \b
    Examples:
      edgeft inspect artifacts/minilm
      edgeft inspect artifacts/minilm --json | jq .trainable.parameters
    """
    from rich.markup import escape
    from rich.table import Table

    from edgeft.manifest import check_fields, load_manifest, verify_files
    from edgeft.report import stdout

    manifest = check_fields(load_manifest(folder, verify=False))
    problems = verify_files(manifest)
    data = manifest.data
    if as_json:
        click.echo(json.dumps({"manifest": data, "verified": not problems, "problems": problems}, indent=2))
    else:
        overview = Table.grid(padding=(0, 2))
        overview.add_column(style="bold")
        overview.add_column()
        trainable = data.get("trainable") if isinstance(data.get("trainable"), dict) else {}
        tool = data.get("tool") if isinstance(data.get("tool"), dict) else {}
        tensors = trainable.get("tensors") if isinstance(trainable.get("tensors"), list) else []
        labels = data.get("labels", {}).get("names", [])
        rows = [
            ("folder", str(folder)), ("kind", str(data.get("kind"))), ("name", str(data.get("name"))),
            ("format", str(data.get("format_version"))), ("source", json.dumps(data.get("source", {}))),
            ("task", f"{data.get('task')} ({data.get('modality')}), loss {data.get('loss')}, optimizer {data.get('optimizer')}"),
            ("inputs", ", ".join(f"{i['name']} {i['dtype']}[{','.join(map(str, i['shape']))}]" for i in data.get("inputs", []))),
            ("labels", f"none: a {data['output']['shape'][-1]}-dimensional embedding, trained on groups of texts"
             if data.get("task") == "embedding" else
             f"{len(labels)}: " + ", ".join(labels[:8]) + (" ..." if len(labels) > 8 else "")),
            ("trainable", f"{trainable.get('spec')}: {len(tensors)} tensors, "
                          f"{_count(trainable.get('parameters'))} parameters ({_count(trainable.get('frozen_parameters'))} frozen)"),
            ("versions", ", ".join(f"{k} {v}" for k, v in tool.items())),
        ]
        for key, value in rows:
            overview.add_row(key, escape(value))
        stdout.print(overview)
        files = Table(title="Files", title_justify="left")
        for col in ("file", "bytes", "sha256", "check"):
            files.add_column(col, justify="right" if col == "bytes" else "left")
        bad = {p.split(" ")[0] for p in problems}
        for entry in data["files"].values():
            ok = entry["path"] not in bad
            files.add_row(entry["path"], _count(entry.get("bytes")), str(entry.get("sha256"))[:16] + "…",
                          "[green]ok[/]" if ok else "[red]MISMATCH[/]")
        stdout.print(files)
    if problems:
        click.secho("error: " + "; ".join(problems), fg="red", err=True)
        sys.exit(1)


def _count(value: object) -> str:
    """A number with thousands separators; anything else (a damaged manifest) as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
