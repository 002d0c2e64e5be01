#!/usr/bin/env python
"""Fine-tune the built-in MiniLM on BANKING77 with edgeft and report test accuracy and wall time.

Usage: python tools/bench_train.py [--data ../shared/data/banking77] [--train head last:1]
       [--epochs-head 30] [--epochs-last 6] [--threads 2] [--out artifacts/bench]

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

from edgeft.export.build import ExportOptions, export_artifacts  # noqa: E402
from edgeft.labels import read_label_file  # noqa: E402
from edgeft.train.evaluate import evaluate_folder  # noqa: E402
from edgeft.train.loop import DataOptions, TrainConfig, train  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--train", nargs="+", default=["head", "last:1"])
    parser.add_argument("--epochs-head", type=int, default=30)
    parser.add_argument("--epochs-last", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    args = parser.parse_args()
    train_csv, test_csv, names, label_column, name = dataset(args.data)
    results = []
    for spec in args.train:
        tag = spec.replace(":", "")
        start = time.perf_counter()
        exported = export_artifacts(ExportOptions(label_names=names, train=spec, output=args.out / f"minilm-{tag}",
                                                  force=True))
        export_s = time.perf_counter() - start
        epochs = args.epochs_head if spec == "head" else args.epochs_last
        config = TrainConfig(epochs=epochs, seed=0, val_fraction=0.1, **RECIPES.get(spec, RECIPES["last:1"]))
        summary = train(exported.folder, DataOptions(train=train_csv, label_column=label_column),
                        args.out / f"run-{tag}", config, threads=args.threads, force=True)
        test = evaluate_folder(args.out / f"run-{tag}", test_csv, threads=args.threads, label_column=label_column)
        results.append({"dataset": name, "train": spec, "epochs": summary["epochs"], "export_s": round(export_s, 1),
                        "train_s": summary["seconds"], "cache_s": summary["cache_seconds"], "examples_per_s": summary["examples_per_second"],
                        "val_accuracy": summary["best"].get("accuracy"), "test_accuracy": round(test["accuracy"], 4),
                        "test_macro_f1": round(test["macro_f1"], 4), "test_examples": test["examples"]})
        print(json.dumps(results[-1]), flush=True)
    print(f"\n| data | --train | epochs | export s | frozen-prefix pass s | train s | ex/s | test acc | test macro-F1 |"
          f"\n|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dataset']} | {r['train']} | {r['epochs']} | {r['export_s']} | {r['cache_s']:.1f} | {r['train_s']:.1f} | "
              f"{r['examples_per_s']:,.0f} | {100 * r['test_accuracy']:.1f}% | {100 * r['test_macro_f1']:.1f}% |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_train.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
