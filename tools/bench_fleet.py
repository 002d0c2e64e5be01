#!/usr/bin/env python
"""Federated fine-tuning of the built-in MiniLM on BANKING77 against centralised training.

For each trainable set (``head``, ``last:1``): a centralised run on the whole training split
(bench_train's recipe), then a Flower simulation of ``--clients`` virtual devices holding a
non-IID (Dirichlet ``--alpha``) split of the same training data, ``--fraction`` of them training
each round. Both are evaluated on the test split (the server evaluates the global model after
every round). Reported: rounds until the global model is within 1 point of the centralised
accuracy, the final and best gap, bytes each device sends per round (the trainable tail only),
and the simulated wall time. Baseline and federation run in the same invocation.

Usage: python tools/bench_fleet.py [--data ../shared/data/banking77] [--train head last:1]
       [--clients 100] [--fraction 0.1] [--alpha 0.5] [--rounds-head 50] [--rounds-last 30]
       [--encodings fp32 int8] [--out artifacts/bench-fleet]

Needs the fleet extra and BANKING77 (not part of the project; without it the example dataset is
used, which is too small for 100 devices: pass --clients 10).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_train import RECIPES, dataset  # noqa: E402
from edgeft.exporting.artifacts import ExportOptions, export_artifacts  # noqa: E402
from edgeft.fleet.settings import FleetSettings  # noqa: E402
from edgeft.fleet.simulate import simulate  # noqa: E402
from edgeft.manifest import MANIFEST_NAME  # noqa: E402
from edgeft.training.loop import DataOptions, TrainConfig, train  # noqa: E402
from edgeft.api import evaluate  # noqa: E402

# Devices' recipe per trainable set: a constant rate, a few local epochs on ~100 examples.
FEDERATED = {"head": dict(lr=1e-2, local_epochs=3, batch_size=32, weight_decay=0.0),
             "last:1": dict(lr=3e-4, local_epochs=2, batch_size=32, weight_decay=0.01)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--train", nargs="+", default=["head", "last:1"])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--rounds-head", type=int, default=50)
    parser.add_argument("--rounds-last", type=int, default=30)
    parser.add_argument("--epochs-head", type=int, default=30, help="centralised epochs (bench_train's)")
    parser.add_argument("--epochs-last", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="threads of the centralised run")
    parser.add_argument("--encodings", nargs="+", default=["fp32", "int8"],
                        help="update encodings to run for head (last:1 runs the first only)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-fleet")
    args = parser.parse_args()
    train_csv, test_csv, names, label_column, name = dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in args.train:
        tag = spec.replace(":", "")
        folder = args.out / f"minilm-{tag}"
        if not (folder / MANIFEST_NAME).is_file():
            export_artifacts(ExportOptions(label_names=names, train=spec, output=folder, force=True))
        epochs = args.epochs_head if spec == "head" else args.epochs_last
        config = TrainConfig(epochs=epochs, seed=0, val_fraction=0.0, **RECIPES[spec])
        started = time.perf_counter()
        central_run = args.out / f"central-{tag}"
        train(folder, DataOptions(train=train_csv, label_column=label_column), central_run, config,
              threads=args.threads, force=True, backend="portable")
        central_s = time.perf_counter() - started
        central = evaluate(central_run, test_csv, threads=args.threads, label_column=label_column).accuracy
        recipe = FEDERATED[spec]
        rounds = args.rounds_head if spec == "head" else args.rounds_last
        for encoding in args.encodings if spec == "head" else args.encodings[:1]:
            settings = FleetSettings(artifacts=str(folder), val=str(test_csv),
                                     run_dir=str(args.out / f"fleet-{tag}-{encoding}"), rounds=rounds,
                                     fraction_train=args.fraction, threads=1, seed=0, force=True, encoding=encoding,
                                     label_column=label_column, **recipe)
            started = time.perf_counter()
            result = simulate(settings, train_csv, args.clients, "dirichlet", args.alpha,
                              central={"after": {"accuracy": central}})
            fleet_s = time.perf_counter() - started
            accuracy = [entry["val"]["accuracy"] for entry in result.history]
            within = next((e["round"] for e in result.history if e["val"]["accuracy"] >= central - 0.01), None)
            results.append({"dataset": name, "train": spec, "encoding": encoding, "clients": args.clients,
                            "fraction": args.fraction, "alpha": args.alpha, "rounds": rounds, **recipe,
                            "central_accuracy": round(central, 4), "central_epochs": epochs,
                            "central_s": round(central_s, 1), "round0_accuracy": round(accuracy[0], 4),
                            "final_accuracy": round(accuracy[-1], 4), "best_accuracy": round(max(accuracy), 4),
                            "rounds_to_within_1pt": within,
                            "final_gap_points": round(100 * (central - accuracy[-1]), 2),
                            "best_gap_points": round(100 * (central - max(accuracy)), 2),
                            "bytes_sent_per_client_round": result.summary["bytes_per_client_per_round"]["sent"],
                            "simulated_s": round(fleet_s, 1), "s_per_round": round(fleet_s / rounds, 1),
                            "accuracy_by_round": [round(a, 4) for a in accuracy]})
            print(json.dumps(results[-1]), flush=True)
    print("\n| --train | updates | centralised test acc | round 0 | final (round R) | best | rounds to within 1 pt | "
          "final gap | bytes / device / round | simulated time |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['train']} | {r['encoding']} | {100 * r['central_accuracy']:.2f}% ({r['central_epochs']} epochs, {r['central_s']:.0f} s) | "
              f"{100 * r['round0_accuracy']:.2f}% | {100 * r['final_accuracy']:.2f}% ({r['rounds']}) | "
              f"{100 * r['best_accuracy']:.2f}% | {r['rounds_to_within_1pt'] or 'not in ' + str(r['rounds'])} | "
              f"{r['final_gap_points']:+.2f} pts | {r['bytes_sent_per_client_round'] / 1024:.0f} KiB | "
              f"{r['simulated_s']:.0f} s ({r['s_per_round']:.1f} s/round) |")
    (args.out / "bench_fleet.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
