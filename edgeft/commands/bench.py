"""``edgeft bench``: latency percentiles, throughput and peak memory of a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(name="bench", context_settings={"max_content_width": 100})
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True, default=(1, 32), show_default=True,
              help="Batch sizes to measure (repeat the option).")
@click.option("--sequence", type=click.IntRange(min=1), default=64, show_default=True, help="Tokens per text example.")
@click.option("--threads", type=click.IntRange(min=1), help="Compute threads [default: the bundle's profile].")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--iterations", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON on stdout.")
def command(bundle: Path, batches: tuple[int, ...], sequence: int, threads: int | None, warmup: int, iterations: int,
            as_json: bool) -> None:
    """Measure BUNDLE with onnxruntime alone: latency p50/p95/p99, throughput and peak memory,
    after warm-up runs.

    \b
    Examples:
      edgeft bench artifacts/bundles/smart-home
      edgeft bench artifacts/bundles/smart-home --batch 1 --batch 8 --threads 4 --json
    """
    from rich.table import Table

    from edgeft.deployment.bundle import Bundle
    from edgeft.deployment.measure import latency, sample_feed
    from edgeft.machine import peak_rss_mb
    from edgeft.report import stdout

    model = Bundle(bundle, threads=threads)
    rows = []
    for batch in batches:
        feed = sample_feed(model.manifest.data, model.folder, batch, sequence)
        rows.append(latency(model.session, {n: feed[n] for n in model.input_names}, warmup, iterations))
    result = {"bundle": str(bundle), "device": model.manifest.data.get("device"), "threads": model.threads,
              "sequence": sequence, "model_mb": round(model.manifest.path("model").stat().st_size / 2**20, 3),
              "peak_rss_mb": round(peak_rss_mb(), 1), "latency": rows}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{bundle} ({result['model_mb']:.1f} MB, {model.threads} thread(s), sequence {sequence})",
                  title_justify="left")
    for column in ("batch", "p50 ms", "p95 ms", "p99 ms", "examples/s", "runs"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["batch"]), f"{row['p50_ms']:.2f}", f"{row['p95_ms']:.2f}", f"{row['p99_ms']:.2f}",
                      f"{row['throughput_per_s']:,.1f}", str(row["runs"]))
    stdout.print(table)
    stdout.print(f"peak resident memory: {result['peak_rss_mb']:.0f} MiB")
