#!/usr/bin/env python
"""Sentence-embedding personalisation of the built-in MiniLM on BANKING77 treated as retrieval.

Each test query's positives are the other test queries of its intent (leave one out over the
3,080 test queries): recall@1/5/10 and MRR of the pretrained embedding (the exported model,
before training) against the embedding fine-tuned with ``--task embedding`` on a few examples
per intent (a seeded sample of the training split; validation is another disjoint sample). Both
are measured in the same run, with and without L2-SP. Reported besides: the general quality kept
(``evaluate --reference`` on the shipped smart-home texts, which share nothing with banking: the
cosine of each text's embeddings before and after, and the correlation of their pairwise
similarities), and the deployed (quantized) bundle's recall@1 on the device profile.

Usage: python tools/bench_embedding.py [--data ../shared/data/banking77] [--per-intent 16]
       [--epochs 8] [--lr 3e-4] [--l2sp 0 1] [--device raspberry-pi-5] [--out artifacts/bench-embedding]

Needs BANKING77 (not part of the project; without it the example dataset is used).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import edgeft  # noqa: E402
from bench_train import dataset  # noqa: E402


def sample_per_group(source: Path, out: Path, label_column: str, counts: tuple[int, ...],
                     seed: int = 0) -> list[Path]:
    """Disjoint seeded samples of ``counts[i]`` rows per group of ``source``, one file each."""
    with open(source, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [row for row in reader if len(row) == len(header) and all(cell.strip() for cell in row)]
    at = header.index(label_column)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for index in rng.permutation(len(rows)):
        groups.setdefault(rows[index][at], []).append(int(index))
    files, start = [], 0
    for number, count in enumerate(counts):
        chosen = sorted(i for members in groups.values() for i in members[start:start + count])
        start += count
        path = out / f"sample-{number}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows[i] for i in chosen)
        files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--per-intent", type=int, default=16, help="training examples per intent")
    parser.add_argument("--val-per-intent", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--l2sp", type=float, nargs="+", default=[0.0, 1.0], help="L2-SP strengths to run")
    parser.add_argument("--device", default="raspberry-pi-5", help="profile of the deployed bundle ('' for none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-embedding")
    args = parser.parse_args()

    train_csv, test_csv, _, label_column, name = dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    train_part, val_part = sample_per_group(train_csv, args.out, label_column, (args.per_intent, args.val_per_intent))
    reference = ROOT / "edgeft" / "examples" / "smart_home" / "train.csv"
    columns = dict(label_column=label_column)
    report: dict = {"dataset": name, "per_intent": args.per_intent, "val_per_intent": args.val_per_intent,
                    "train_examples": sum(1 for _ in open(train_part, encoding="utf-8")) - 1,
                    "settings": {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size}, "runs": []}
    started = time.perf_counter()
    artifacts = edgeft.export(task="embedding", train="last:1", output=args.out / "artifacts",
                              l2sp=max(args.l2sp) if any(args.l2sp) else None, force=True)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    before = edgeft.evaluate(artifacts, test_csv, threads=args.threads, **columns)
    report["pretrained"] = {k: before.record[k] for k in ("recall@1", "recall@5", "recall@10", "mrr", "queries")}
    print(f"pretrained: recall@1 {before.recall_at_1:.4f}, MRR {before.mrr:.4f}", file=sys.stderr)
    for strength in args.l2sp:
        run_dir = args.out / f"run-l2sp-{strength:g}"
        started = time.perf_counter()
        settings = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup=0.1,
                        l2sp=strength if any(args.l2sp) else None)
        run = edgeft.train(artifacts, train_part, val=val_part, run_dir=run_dir, force=True,
                           threads=args.threads, **columns, **settings)
        seconds = time.perf_counter() - started
        after = edgeft.evaluate(run, test_csv, threads=args.threads, reference=reference, **columns)
        entry = {"l2sp": strength, "train_seconds": round(seconds, 1), "best_epoch": run.summary["best"]["epoch"],
                 **{k: after.record[k] for k in ("recall@1", "recall@5", "recall@10", "mrr")},
                 "retention": {k: v for k, v in (after.retention or {}).items() if k != "reference"}}
        print(f"l2sp {strength:g}: recall@1 {after.recall_at_1:.4f} (pretrained {before.recall_at_1:.4f}), "
              f"MRR {after.mrr:.4f}, reference cosine {entry['retention'].get('mean_cosine', 0):.4f}",
              file=sys.stderr)
        if args.device and strength == args.l2sp[0]:
            bundle = edgeft.deploy(run, device=args.device, output=args.out / f"bundle-{args.device}", force=True)
            deployed = edgeft.evaluate(bundle, test_csv, threads=args.threads, **columns)
            entry["bundle"] = {"device": args.device, "recall@1": deployed.recall_at_1, "mrr": deployed.mrr,
                               "chosen": bundle.report["chosen"], "size_mb": bundle.report["bundle_model"]["size_mb"]}
        report["runs"].append(entry)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
