"""Tables shown to people (trainable and frozen parameters, manifests, summaries) and the consoles they go to."""

from __future__ import annotations

import os
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from edgeft.selection import find_blocks


def _console(on_stderr: bool) -> Console:
    """Rich's console on stdout or stderr. In a log or a pipe (no terminal, no COLUMNS) rich would
    wrap tables at 80 columns; 120 keeps a row of a table on one line of the log."""
    console = Console(stderr=on_stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


# The command line's convention: results (tables, reports, predictions) on stdout, so they can be
# piped and redirected; progress, notes and warnings on stderr.
stdout = _console(on_stderr=False)
stderr = _console(on_stderr=True)


def group_name(name: str, block_prefix: str | None) -> str:
    """The row a tensor is counted in: its block (``encoder.layer.5``) or its module."""
    if block_prefix is not None and name.startswith(block_prefix):
        rest = name[len(block_prefix):]
        return block_prefix + rest.split(".", 1)[0]
    return name.rpartition(".")[0] or name


def parameter_table(tensors: Iterable[tuple[str, int, bool]], title: str = "Parameters",
                    detailed: bool = False) -> Table:
    """Rows of (name, parameter count, trainable) in forward order, grouped per block or module."""
    tensors = list(tensors)
    blocks = find_blocks([n for n, _, _ in tensors])
    prefix = blocks.prefix if blocks else None
    rows: dict[tuple[str, str], list[int]] = {}
    for name, numel, trains in tensors:
        key = (name if detailed else group_name(name, prefix), "trainable" if trains else "frozen")
        entry = rows.setdefault(key, [0, 0])
        entry[0] += 1
        entry[1] += numel
    table = Table(title=title, title_justify="left")
    table.add_column("tensor" if detailed else "block / module")
    table.add_column("status")
    table.add_column("tensors", justify="right")
    table.add_column("parameters", justify="right")
    for (name, state), (count, numel) in rows.items():
        table.add_row(name, state, str(count), f"{numel:,}", style="bold green" if state == "trainable" else "dim")
    trained = [numel for _, numel, trains in tensors if trains]
    frozen = [numel for _, numel, trains in tensors if not trains]
    total = max(sum(trained) + sum(frozen), 1)
    table.add_section()
    table.add_row("trainable", "", str(len(trained)), f"{sum(trained):,} ({100 * sum(trained) / total:.1f}%)", style="bold")
    table.add_row("frozen", "", str(len(frozen)), f"{sum(frozen):,}", style="bold")
    return table
