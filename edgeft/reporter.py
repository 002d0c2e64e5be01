"""The one progress protocol every long step reports through.

The CLI passes a reporter that draws on stderr with rich (:mod:`edgeft.progress`); the Python API
stays silent by default, or forwards notes to a callback (``progress=print``). Nothing here
imports rich, so the silent path costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union


class Reporter:
    """Progress events; the defaults ignore them (silent)."""

    def message(self, text: str) -> None:
        """A note: a step starting, something skipped, what was chosen."""

    def start(self, total_steps: int, done_steps: int, epochs: int) -> None:
        """Training starts (``done_steps`` of ``total_steps`` already done when resuming)."""

    def step(self, step: int, loss: float, examples_per_second: float, lr: float) -> None:
        """An optimizer step ended."""

    def epoch(self, record: dict[str, Any]) -> None:
        """An epoch ended; ``record`` is its line of ``metrics.jsonl``."""

    def finish(self) -> None:
        """Training ended (or stopped); a progress bar is taken down."""


class CallbackReporter(Reporter):
    """Notes and epoch summaries as text lines to a callback (e.g. ``print`` or a logger's ``info``)."""

    def __init__(self, callback: Callable[[str], Any]) -> None:
        self.callback = callback

    def message(self, text: str) -> None:
        self.callback(text)

    def epoch(self, record: dict[str, Any]) -> None:
        val = record.get("val") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float))
        loss = record.get("train_loss")
        head = f"epoch {record['epoch']}" + (f": train loss {loss:.4f}" if loss is not None else "")
        self.callback(head + (f"; val {shown}" if shown else ""))


Progress = Union[Reporter, Callable[[str], Any], None]


def as_reporter(progress: Progress) -> Reporter:
    """A :class:`Reporter` for what an API caller passed: a reporter, a callback or None (silent)."""
    if isinstance(progress, Reporter):
        return progress
    return CallbackReporter(progress) if progress is not None else Reporter()
