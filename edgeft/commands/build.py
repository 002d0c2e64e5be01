"""``edgeft build``: every build of an edgeft.toml, skipping what has not changed."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="build", context_settings={"max_content_width": 100})
@click.argument("build_file", required=False, default="edgeft.toml", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, help="Build only this entry (repeat for more).")
@click.option("--force", is_flag=True, help="Rebuild even when nothing changed.")
@click.option("--report", type=click.Path(path_type=Path), help="Also write the JSON build report to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the build report as JSON on stdout.")
def command(build_file: Path, only: tuple[str, ...], force: bool, report: Path | None, as_json: bool) -> None:
    """Build the training artifacts (and untrained bundles) declared in BUILD_FILE [edgeft.toml].

    A build is skipped when the content of its model and label files, its entry and the tool
    and runtime versions are unchanged; unchanged builds give byte-identical ONNX files and
    checkpoints, so caches and signatures work.

    \b
    Examples:
      edgeft build                                  # ./edgeft.toml
      edgeft build ci/edgeft.toml --json --report build-report.json
      edgeft build --only smart-home --force
    """
    from rich.table import Table

    from edgeft.buildfile import run_builds
    from edgeft.fsutil import atomic_write_text
    from edgeft.report import stderr, stdout

    if as_json:
        result = run_builds(build_file, force=force, only=list(only))
    else:
        with stderr.status("building") as status:
            result = run_builds(build_file, force=force, only=list(only),
                                progress=lambda text: status.update(f"{text}..."))
    if report:
        atomic_write_text(report, json.dumps(result, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{build_file}: {result['built']} built, {result['skipped']} skipped in {result['seconds']:.1f} s",
                  title_justify="left")
    for column in ("build", "status", "output", "packages", "bundles", "seconds"):
        table.add_column(column)
    for entry in result["builds"]:
        packages, bundles = (", ".join(f"{b['device']} ({b['status']})" for b in entry[key]) or "-"
                             for key in ("packages", "bundles"))
        table.add_row(entry["name"], entry["status"], entry["output"], packages, bundles, f"{entry['seconds']:.1f}")
    stdout.print(table)
