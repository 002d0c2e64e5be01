"""Options shared by the commands that read user data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def data_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--text-column, --label-column and --strict, the same on every data-reading command."""
    func = click.option("--strict", is_flag=True, help="Refuse rows with a missing text or label instead of skipping them.")(func)
    func = click.option("--label-column", default="label", show_default=True, help="Label column of CSV/TSV/JSONL data.")(func)
    func = click.option("--text-column", default="text", show_default=True, help="Text column of CSV/TSV/JSONL data.")(func)
    return func
