#!/usr/bin/env python
"""Deploy MiniLM fine-tuned on BANKING77 and compare the int8 bundle with the fp32 model.

Usage: python tools/bench_deploy.py [--run artifacts/bench/run-head] [--device x86-64-avx512-vnni]
       [--data ../shared/data/banking77] [--threads 2] [--out artifacts/bench]

Trains one if --run does not exist (head only, like tools/bench_train.py). Everything is
measured in this run: sizes, batch-1 and batch-32 latency at sequence 64, and test accuracy of
the fp32 inference model and of the bundle. Targets (issue 4): bundle size <= 30% of fp32,
batch-1 speed-up >= 1.8x, accuracy loss <= 1 point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeft.deploy.bundle import Bundle  # noqa: E402
from edgeft.deploy.measure import latency, sample_feed  # noqa: E402
from edgeft.deploy.pipeline import DeployOptions, deploy  # noqa: E402
from edgeft.deploy.runtime import InferenceStepper, make_session  # noqa: E402
from edgeft.data.records import read_records  # noqa: E402
from edgeft.manifest import load_manifest  # noqa: E402
from edgeft.train.evaluate import evaluate  # noqa: E402
from edgeft.train.examples import ExampleSet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "artifacts" / "bench" / "run-head")
    parser.add_argument("--device", default="x86-64-avx512-vnni")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench")
    args = parser.parse_args()
    if not (args.run / "run.json").is_file():
        sys.exit(f"{args.run} is not a run folder: run tools/bench_train.py --train head first")
    label_column = "category" if (args.data / "test.csv").is_file() else "label"
    test_csv = args.data / "test.csv" if (args.data / "test.csv").is_file() else \
        ROOT / "edgeft" / "examples" / "smart_home" / "test.csv"
    report = deploy(DeployOptions(source=args.run, device=args.device, output=args.out / f"bundle-{args.device}",
                                  label_column=label_column, force=True))
    bundle = Bundle(Path(report["bundle"]), threads=args.threads)
    manifest = load_manifest(bundle.folder, kind="bundle")
    examples = ExampleSet(read_records(test_csv, manifest.data, label_column=label_column), manifest)
    # the fp32 inference model is rebuilt exactly as deploy built it, for the same-run comparison
    from edgeft.deploy.inference_model import build_inference_model
    from edgeft.train.evaluate import checkpoint_parameters, resolve_model

    artifacts, checkpoint = resolve_model(args.run)
    fp32_path, _ = build_inference_model(artifacts.path("forward_model"), checkpoint_parameters(checkpoint),
                                         args.out / "fp32-inference.onnx", True,
                                         artifacts.data["source"].get("num_attention_heads"),
                                         artifacts.data["source"].get("hidden_size"))
    rows = {}
    for name, path in (("fp32", fp32_path), ("bundle", manifest.path("model"))):
        session = make_session(path, args.threads, "all")
        metrics = evaluate(InferenceStepper(session, manifest), examples, manifest.data["task"],
                           len(manifest.data["labels"]["names"]), 64)
        rows[name] = {"size_mb": round(path.stat().st_size / 2**20, 2), "test_accuracy": round(metrics["accuracy"], 4),
                      **{f"batch{b}": latency(session, sample_feed(manifest.data, bundle.folder, b, 64),
                                              iterations=100 if b == 1 else 20) for b in (1, 32)}}
    result = {"device": args.device, "chosen": report["chosen"], "test_examples": len(examples), **rows,
              "size_ratio": round(rows["bundle"]["size_mb"] / rows["fp32"]["size_mb"], 3),
              "speedup_batch1": round(rows["fp32"]["batch1"]["p50_ms"] / rows["bundle"]["batch1"]["p50_ms"], 2),
              "speedup_batch32": round(rows["fp32"]["batch32"]["p50_ms"] / rows["bundle"]["batch32"]["p50_ms"], 2),
              "accuracy_loss_points": round(100 * (rows["fp32"]["test_accuracy"] - rows["bundle"]["test_accuracy"]), 2)}
    print("| model | size MB | test acc | b1 p50 ms | b1 p95 ms | b32 p50 ms |\n|---|---|---|---|---|---|")
    for name in ("fp32", "bundle"):
        r = rows[name]
        print(f"| {name} | {r['size_mb']} | {100 * r['test_accuracy']:.2f}% | {r['batch1']['p50_ms']:.2f} | "
              f"{r['batch1']['p95_ms']:.2f} | {r['batch32']['p50_ms']:.1f} |")
    print(f"\nsize ratio {result['size_ratio']} (target <= 0.30), batch-1 speed-up {result['speedup_batch1']}x "
          f"(target >= 1.8), accuracy loss {result['accuracy_loss_points']} points (target <= 1)")
    (args.out / "bench_deploy.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
