#!/usr/bin/env python
"""The portable training backend against ONNX Runtime's training API: same data, epochs, seed, threads.

Usage: python tools/bench_backends.py [--data ../shared/data/banking77] [--train-examples 2000]
       [--epochs 3] [--threads 2] [--repeats 2] [--out artifacts/bench-backends]

Exports the built-in MiniLM once (``--train last:1``, frozen-prefix cache), then fine-tunes it
with each backend in turn (alternating, ``--repeats`` times, so a machine shared with other
work slows both alike) and evaluates the best checkpoint on the test split. Reports the wall
time of the whole ``train()`` call (prefix cache included), the time of the training loop
alone, the CPU time of ``train()``, the ratio portable / ORT of each (target: wall time at most
1.5x), and test accuracy. Without
BANKING77 the example dataset is used. Results are also written as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeft.exporting.artifacts import ExportOptions, export_artifacts  # noqa: E402
from edgeft.labels import read_label_file  # noqa: E402
from edgeft.api import evaluate as evaluate_model  # noqa: E402
from edgeft.training.loop import DataOptions, TrainConfig, train  # noqa: E402

BACKENDS = ("ort-training", "portable")


def dataset(folder: Path, out: Path, limit: int) -> tuple[Path, Path, list[str], str, str]:
    """Train and test files (a seeded sample of ``limit`` training rows), label names, label column, name."""
    if (folder / "train.csv").is_file():
        names = read_label_file(folder / "categories.json")
        source, test, column, name = folder / "train.csv", folder / "test.csv", "category", "BANKING77"
    else:
        example = ROOT / "edgeft" / "examples" / "smart_home"
        names = read_label_file(example / "labels.txt")
        source, test, column, name = example / "train.csv", example / "test.csv", "label", "smart_home"
    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    random.Random(0).shuffle(body)  # BANKING77's file is sorted by intent: a prefix would miss most
    out.mkdir(parents=True, exist_ok=True)
    subset = out / "train.csv"
    with open(subset, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *body[:limit]])
    return subset, test, names, column, f"{name} ({min(limit, len(rows) - 1)} train rows)"


def _cpu_seconds() -> float:
    """CPU time of this process (user + system): less sensitive than wall time to other load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-backends")
    args = parser.parse_args()
    train_csv, test_csv, names, column, name = dataset(args.data, args.out, args.train_examples)
    exported = export_artifacts(ExportOptions(label_names=names, train="last:1", output=args.out / "minilm-last1",
                                              force=True))
    config = TrainConfig(epochs=args.epochs, seed=0, val_fraction=0.1, lr=2e-4, batch_size=32, weight_decay=0.01,
                         warmup=0.1, schedule="linear")
    runs: list[dict] = []
    for repeat in range(args.repeats):
        for backend in BACKENDS:
            run_dir = args.out / f"run-{backend}"
            start, cpu = time.perf_counter(), _cpu_seconds()
            summary = train(exported.folder, DataOptions(train=train_csv, label_column=column), run_dir, config,
                            threads=args.threads, force=True, backend=backend)
            wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            test = evaluate_model(run_dir, test_csv, threads=args.threads, label_column=column, backend=backend).record
            runs.append({"backend": backend, "repeat": repeat, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                         "loop_s": summary["seconds"],
                         "val_accuracy": summary["best"].get("accuracy"), "test_accuracy": round(test["accuracy"], 4),
                         "peak_rss_mb": summary["peak_rss_mb"]})
            print(json.dumps(runs[-1]), flush=True)
    table = {}
    for backend in BACKENDS:
        mine = [r for r in runs if r["backend"] == backend]
        table[backend] = {"wall_s": statistics.median(r["wall_s"] for r in mine),
                          "cpu_s": statistics.median(r["cpu_s"] for r in mine),
                          "loop_s": statistics.median(r["loop_s"] for r in mine),
                          "test_accuracy": mine[-1]["test_accuracy"], "val_accuracy": mine[-1]["val_accuracy"]}
    ratio = {k: round(table["portable"][k] / table["ort-training"][k], 3) for k in ("wall_s", "loop_s", "cpu_s")}
    print(f"\n{name}, MiniLM --train last:1 (cache), {args.epochs} epochs, batch 32, {args.threads} threads, "
          f"median of {args.repeats}\n")
    print("| backend | train() wall s | training loop s | train() CPU s | val acc | test acc |\n|---|---|---|---|---|---|")
    for backend, row in table.items():
        print(f"| {backend} | {row['wall_s']:.1f} | {row['loop_s']:.1f} | {row['cpu_s']:.1f} | "
              f"{100 * row['val_accuracy']:.1f}% | {100 * row['test_accuracy']:.1f}% |")
    print(f"| portable / ORT | {ratio['wall_s']:.2f}x | {ratio['loop_s']:.2f}x | {ratio['cpu_s']:.2f}x | | |")
    print(f"\ntarget: wall time ratio <= 1.5 -> {'met' if ratio['wall_s'] <= 1.5 else 'MISSED'}")
    (args.out / "bench_backends.json").write_text(json.dumps(
        {"dataset": name, "epochs": args.epochs, "threads": args.threads, "runs": runs, "median": table,
         "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
