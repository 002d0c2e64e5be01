#!/usr/bin/env python
"""Fine-tune the built-in MiniLM on BANKING77 with edgeft and report test accuracy and wall time.

Each trainable set is trained twice with the same recipe: from the artifact folder (fp32 frozen
prefix) and from a device package (``--device``, default this machine's profile: the frozen
prefix quantized as the profile says, checked on a seeded sample of the training data), so the
accuracy cost and the speed of training on the quantized prefix are measured in one run.

Usage: python tools/bench_train.py [--data ../shared/data/banking77] [--train head last:1]
       [--epochs-head 30] [--epochs-last 6] [--threads 2] [--device auto] [--no-package]
       [--out artifacts/bench]

BANKING77 is not part of the project; without it the script uses the example dataset. The
figures are measured in this run and written as JSON next to the printed table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeft.exporting.artifacts import ExportOptions, export_artifacts  # noqa: E402
from edgeft.labels import read_label_file  # noqa: E402
from edgeft.api import evaluate as evaluate_model  # noqa: E402
from edgeft.training.loop import DataOptions, TrainConfig, train  # noqa: E402

RECIPES = {  # hyper-parameters per trainable set (tuned on the validation split, not on test)
    "head": dict(lr=1e-2, batch_size=32, weight_decay=0.0, warmup=0.0, schedule="linear"),
    "last:1": dict(lr=2e-4, batch_size=32, weight_decay=0.01, warmup=0.1, schedule="linear"),
}


def dataset(folder: Path) -> tuple[Path, Path, list[str], str, str]:
    if (folder / "train.csv").is_file():
        names = read_label_file(folder / "categories.json")
        return folder / "train.csv", folder / "test.csv", names, "category", "BANKING77"
    example = ROOT / "edgeft" / "examples" / "smart_home"
    return example / "train.csv", example / "test.csv", read_label_file(example / "labels.txt"), "label", "smart_home"


def guard_sample(train_csv: Path, out: Path, count: int) -> Path:
    """A seeded sample of the training rows (never test rows) for the package's prefix guard."""
    import csv

    import numpy as np

    with open(train_csv, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header, rows = next(reader), list(reader)
    chosen = sorted(np.random.default_rng(0).permutation(len(rows))[:count])
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows[i] for i in chosen)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--train", nargs="+", default=["head", "last:1"])
    parser.add_argument("--epochs-head", type=int, default=30)
    parser.add_argument("--epochs-last", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="profile of the device package way")
    parser.add_argument("--no-package", action="store_true", help="train from the artifact folder only")
    parser.add_argument("--guard-examples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    args = parser.parse_args()
    train_csv, test_csv, names, label_column, name = dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    guard_csv = guard_sample(train_csv, args.out / "guard.csv", args.guard_examples)
    results = []
    for spec in args.train:
        tag = spec.replace(":", "")
        epochs = args.epochs_head if spec == "head" else args.epochs_last
        config = TrainConfig(epochs=epochs, seed=0, val_fraction=0.1, **RECIPES.get(spec, RECIPES["last:1"]))
        ways = [("artifacts", {})] + ([] if args.no_package else
                                      [("package", {"device": args.device, "guard_data": guard_csv,
                                                    "label_column": label_column})])
        for way, extra in ways:
            start = time.perf_counter()
            exported = export_artifacts(ExportOptions(label_names=names, train=spec, force=True,
                                                      output=args.out / f"minilm-{tag}{'-package' if extra else ''}",
                                                      **extra))
            export_s = time.perf_counter() - start
            run = args.out / f"run-{tag}{'-package' if extra else ''}"
            summary = train(exported.folder, DataOptions(train=train_csv, label_column=label_column), run, config,
                            threads=args.threads, force=True)
            test = evaluate_model(run, test_csv, threads=args.threads, label_column=label_column).record
            prefix = exported.manifest.data.get("prefix") or {}
            results.append({"dataset": name, "train": spec, "way": way, "epochs": summary["epochs"],
                            "export_s": round(export_s, 1), "train_s": summary["seconds"],
                            "cache_s": summary["cache_seconds"], "examples_per_s": summary["examples_per_second"],
                            "val_accuracy": summary["best"].get("accuracy"), "test_accuracy": round(test["accuracy"], 4),
                            "test_macro_f1": round(test["macro_f1"], 4), "test_examples": test["examples"],
                            "prefix": prefix.get("recipe_summary", "fp32"), "prefix_chosen": prefix.get("chosen"),
                            "size_mb": (exported.manifest.data.get("size") or {}).get("package_mb")})
            print(json.dumps(results[-1]), flush=True)
    print("\n| data | --train | way (frozen prefix) | epochs | frozen-prefix pass s | train s | test acc | test macro-F1 |"
          "\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['train']} | {r['way']} ({r['prefix']}) | {r['epochs']} | {r['cache_s']:.1f} | "
              f"{r['train_s']:.1f} | {100 * r['test_accuracy']:.2f}% | {100 * r['test_macro_f1']:.2f}% |")
    for spec in args.train:
        pair = {r["way"]: r for r in results if r["train"] == spec}
        if len(pair) == 2:
            print(f"{spec}: package - artifacts = {100 * (pair['package']['test_accuracy'] - pair['artifacts']['test_accuracy']):+.2f} "
                  f"points test accuracy; frozen-prefix pass {pair['artifacts']['cache_s'] / pair['package']['cache_s']:.2f}x faster")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_train.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
