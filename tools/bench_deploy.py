#!/usr/bin/env python
"""Deploying from a device package against deploying the whole graph, measured in one run.

MiniLM (``--train``, default last:1) is exported twice, as an artifact folder and as a device
package for ``--device`` (default stm32mp25, the 512 MB board), each trained the same way on the
data, then deployed for that profile, each deploy in its own process: wall time, peak resident
memory (of the deploy process alone), bundle size and the bundle's test accuracy, against the
trained run's own test accuracy. Ratios are package / whole graph.

Usage: python tools/bench_deploy.py [--data ../shared/data/banking77] [--device stm32mp25]
       [--train last:1] [--epochs 1] [--threads 2] [--out artifacts/bench/deploy]

Without BANKING77 the example dataset is used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.bench_train import dataset, guard_sample  # noqa: E402

# run a command, then print the peak resident memory (KiB on Linux) of the processes it waited for
PEAK = ("import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\nsys.exit(code)\n")


def edgeft(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "edgeft", *args, "--json"], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"failed: edgeft {' '.join(args)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def measured(*args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of ``edgeft ARGS`` in a process of its own."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "edgeft", *args], capture_output=True,
                         text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"failed: edgeft {' '.join(args)}\n{out.stderr[-3000:]}")
    return seconds, int(out.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--device", default="stm32mp25")
    parser.add_argument("--train", default="last:1")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "deploy")
    args = parser.parse_args()
    train_csv, test_csv, names, label_column, name = dataset(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    labels = args.out / "labels.json"
    labels.write_text(json.dumps(names))
    guard = guard_sample(train_csv, args.out / "guard.csv", 2000)
    columns = ["--label-column", label_column]
    artifacts, package = args.out / "artifacts", args.out / "package"
    edgeft("export", "--labels", str(labels), "--train", args.train, "-o", str(artifacts), "--force")
    edgeft("package", str(artifacts), "--device", args.device, "--guard-data", str(guard), *columns, "-o", str(package),
           "--force")
    rows = {}
    for way, folder in (("whole graph (artifacts)", artifacts), ("device package", package)):
        run, bundle = args.out / f"run-{folder.name}", args.out / f"bundle-{folder.name}"
        edgeft("train", str(folder), str(train_csv), *columns, "--epochs", str(args.epochs), "--lr", "2e-4",
               "--batch-size", "32", "--threads", str(args.threads), "--run-dir", str(run), "--force")
        trained = edgeft("evaluate", str(run), str(test_csv), *columns, "--threads", str(args.threads))
        seconds, peak = measured("deploy", str(run), "--device", args.device, "-o", str(bundle), "--force", "--json")
        report = json.loads((bundle / "report.json").read_text())
        deployed = edgeft("evaluate", str(bundle), str(test_csv), *columns, "--threads", str(args.threads))
        rows[way] = {"way": way, "deploy_s": round(seconds, 1), "peak_rss_mb": round(peak, 1),
                     "bundle_mb": report["bundle_model"]["size_mb"], "chosen": report["chosen"],
                     "run_test_accuracy": round(trained["accuracy"], 4), "bundle_test_accuracy": round(deployed["accuracy"], 4)}
        print(json.dumps(rows[way]), flush=True)
    whole, pkg = rows["whole graph (artifacts)"], rows["device package"]
    print(f"\n{name}, MiniLM --train {args.train}, deploy for {args.device}:\n")
    print("| way | deploy wall | peak RSS | bundle | chosen | run test acc | bundle test acc |")
    print("|---|---|---|---|---|---|---|")
    for r in rows.values():
        print(f"| {r['way']} | {r['deploy_s']} s | {r['peak_rss_mb']:.0f} MB | {r['bundle_mb']:.1f} MB | {r['chosen']} | "
              f"{100 * r['run_test_accuracy']:.2f}% | {100 * r['bundle_test_accuracy']:.2f}% |")
    ratios = {"time_ratio": round(pkg["deploy_s"] / whole["deploy_s"], 3),
              "memory_ratio": round(pkg["peak_rss_mb"] / whole["peak_rss_mb"], 3),
              "package_bundle_vs_run_points": round(100 * (pkg["bundle_test_accuracy"] - pkg["run_test_accuracy"]), 2)}
    print(f"\npackage / whole graph: time {ratios['time_ratio']}x, peak memory {ratios['memory_ratio']}x; "
          f"package bundle vs its run: {ratios['package_bundle_vs_run_points']:+.2f} points")
    (args.out / "bench_deploy.json").write_text(json.dumps({"rows": list(rows.values()), **ratios}, indent=2) + "\n")


if __name__ == "__main__":
    main()
