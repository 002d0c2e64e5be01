#!/usr/bin/env python
"""edgeft against PyTorch eager on the same fine-tuning work, measured in one run.

For each trainable set (--train head and last:1 by default) the same MiniLM is fine-tuned four
ways, each in its own process with the same thread count, data order and hyper-parameters:
PyTorch eager with the same layers frozen (tools/torch_baseline.py), edgeft through the full
graph (--no-cache), edgeft with the frozen-prefix cache, and edgeft on a device package (the
frozen prefix quantized for --device, default this machine's profile, checked on a seeded sample
of the training data). Reported: wall time of training (the frozen-prefix pass included),
examples per second, peak resident memory, test accuracy, and ratios to PyTorch.

Usage: python tools/bench_compare.py [--data ../shared/data/banking77] [--epochs 5] [--threads 2]
       [--train head last:1] [--device auto] [--ways edgeft-cache edgeft-package] [--out artifacts/bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.bench_train import dataset, guard_sample  # noqa: E402

LR = {"head": 1e-2, "last:1": 2e-4}
WAYS = {"edgeft-no-cache": ["--no-cache"], "edgeft-cache": [], "edgeft-package": []}  # way -> train options


def run_json(command: list[str]) -> dict:
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--train", nargs="+", default=["head", "last:1"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS),
                        help="edgeft ways to run (PyTorch eager, the baseline, always runs)")
    args = parser.parse_args()
    train_csv, test_csv, names, label_column, name = dataset(args.data)
    python, rows = sys.executable, []
    labels_file = args.out / "labels.json"
    args.out.mkdir(parents=True, exist_ok=True)
    labels_file.write_text(json.dumps(names))
    guard_csv = guard_sample(train_csv, args.out / "guard.csv", 2000)
    for spec in args.train:
        tag = spec.replace(":", "")
        artifacts = args.out / f"compare-{tag}"
        run_json([python, "-m", "edgeft", "export", "--labels", str(labels_file), "--train", spec, "-o", str(artifacts),
                  "--force", "--json"])
        package = args.out / f"compare-{tag}-package"
        run_json([python, "-m", "edgeft", "package", str(artifacts), "--device", args.device, "--guard-data",
                  str(guard_csv), "--label-column", label_column, "-o", str(package), "--force", "--json"])
        common = ["--epochs", str(args.epochs), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                  "--lr", str(LR.get(spec, 2e-4)), "--weight-decay", "0.01", "--warmup", "0.1"]
        torch_row = run_json([python, "tools/torch_baseline.py", str(artifacts), str(train_csv), str(test_csv),
                              "--label-column", label_column, *common])
        results = {"pytorch-eager": torch_row}
        for way in args.ways:
            folder, extra = package if way == "edgeft-package" else artifacts, WAYS[way]
            run_dir = args.out / f"compare-run-{tag}-{way}"
            summary = run_json([python, "-m", "edgeft", "train", str(folder), str(train_csv), "--label-column",
                                label_column, "--val-fraction", "0", "--run-dir", str(run_dir), "--force", "--json",
                                *common, *extra])
            test = run_json([python, "-m", "edgeft", "evaluate", str(run_dir), str(test_csv), "--label-column",
                             label_column, "--threads", str(args.threads), "--json"])
            seconds = summary["seconds"] + summary["cache_seconds"]  # the frozen-prefix pass counts too
            results[way] = {"way": way, "seconds": round(seconds, 3), "steps": summary["steps"],
                            "cache_seconds": summary["cache_seconds"],
                            "examples_per_second": round(summary["examples_per_second"] * summary["seconds"] / seconds, 1),
                            "peak_rss_mb": summary["peak_rss_mb"], "test_accuracy": round(test["accuracy"], 4)}
        base = results["pytorch-eager"]
        for way, row in results.items():
            row.update({"train": spec, "dataset": name, "epochs": args.epochs, "threads": args.threads,
                        "time_ratio": round(row["seconds"] / base["seconds"], 3),
                        "memory_ratio": round(row["peak_rss_mb"] / base["peak_rss_mb"], 3)})
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| --train | way | wall s | ex/s | peak RSS MB | test acc | time / PyTorch | memory / PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['train']} | {r['way']} | {r['seconds']:.1f} | {r['examples_per_second']:,.0f} | "
              f"{r['peak_rss_mb']:.0f} | {100 * r['test_accuracy']:.1f}% | {r['time_ratio']:.3f} | {r['memory_ratio']:.3f} |")
    (args.out / "bench_compare.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
