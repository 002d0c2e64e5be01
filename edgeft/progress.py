"""The training progress bar and summaries drawn on stderr with rich."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from edgeft.report import stderr
from edgeft.reporter import Reporter


class RichReporter(Reporter):
    """Progress bar with loss, examples per second and learning rate; a line per epoch."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} ex/s"),
                                 TextColumn("lr {task.fields[lr]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=stderr, transient=False)
        self.task: Any = None

    def message(self, text: str) -> None:
        self.progress.console.print(f"  [cyan]•[/] {text}", highlight=False)

    def start(self, total_steps: int, done_steps: int, epochs: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=done_steps, loss="-", speed="-", lr="-")

    def step(self, step: int, loss: float, examples_per_second: float, lr: float) -> None:
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{examples_per_second:,.0f}",
                             lr=f"{lr:.2e}")

    def epoch(self, record: dict[str, Any]) -> None:
        val = record.get("val") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float))
        self.message(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}" + (f"; val {shown}" if shown else ""))

    def finish(self) -> None:
        self.progress.stop()


def summary_table(summary: dict[str, Any]) -> Table:
    """Before / after metrics and the run's figures."""
    table = Table(title="Fine-tuning summary", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    before, after = summary.get("before") or {}, summary.get("after") or {}
    for key in after:
        if isinstance(after[key], float):
            table.add_row(f"val {key}", f"{before.get(key, float('nan')):.4f}", f"{after[key]:.4f}")
    table.add_section()
    table.add_row("epochs / steps", "", f"{summary['epochs']} / {summary['steps']}")
    table.add_row("wall time", "", f"{summary['seconds']:.1f} s")
    if summary.get("cache_seconds"):
        table.add_row("frozen-prefix pass", "", f"{summary['cache_seconds']:.1f} s")
    table.add_row("examples per second", "", f"{summary['examples_per_second']:,.0f}")
    table.add_row("frozen-prefix cache", "", "on" if summary["cache"] else "off")
    if summary.get("overfitting_since_epoch") is not None:
        table.add_row("overfitting", "", f"validation loss rising since epoch {summary['overfitting_since_epoch']}")
    table.add_row("checkpoint", "", str(summary["checkpoint"]))
    return table
