#!/usr/bin/env python
"""The reliability report: kill edgeft, fill its disk, feed it hostile files; count what broke.

Usage: python tools/reliability.py [--kills 20] [--fuzz 1000] [--seed N] [--json]
       [--out artifacts/reliability] [--only kills disk fuzz] [--backends ort-training portable]

- kills: ``edgeft train`` (a tiny BERT, dropout on, frozen-prefix cache) is SIGKILLed at seeded
  random moments, resumes included, until at least --kills kills hit a running process, with
  each training backend; each trial must end, after ``--resume``, with the uninterrupted run's
  weights bit for bit, and every resume must continue from the newest checkpoint (its step, only
  the remaining steps, the checkpoints it found unchanged), not start over.
- disk: a full disk (a small tmpfs when this runs as root, else RLIMIT_FSIZE) during a
  checkpoint, an export and a deploy, each at several fill levels: one clear error, and the
  previous checkpoint, artifact folder or bundle byte-identical.
- fuzz: --fuzz hypothesis-generated inputs for each file type edgeft reads (CSV, TSV, JSONL,
  npz, image folders, manifests, device profiles): no traceback, every refusal names the file,
  the place and what to do, and the valid files of known content among them read back exactly.

The seed (kill moments and fuzzer) is --seed, else $EDGEFT_SEED, else a new one; it is printed.

The machinery is shared with the test suite (tests/reliability_faults.py, tests/reliability_fuzz.py;
CI runs a few of each). The table goes to stdout (stderr with --json, which prints the report as
JSON instead); the JSON report is always written to OUT/report.json. Exit status 1 when anything
lost data, crashed or gave an unclear message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path[:0] = [str(ROOT), str(TESTS)]  # the shared fault and fuzz machinery lives next to the tests

CHECKPOINT_FREE = (0, 8 << 10)  # bytes left: nothing, or a few pages (the checkpoint itself fails)
EXPORT_FRACTIONS = (0.0, 0.2, 0.5, 0.8)  # of the artifact folder (tmpfs) or its largest file (rlimit)
DEPLOY_FRACTIONS = (0.0, 0.3, 0.7)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Fixtures:
    """A tiny BERT, its artifacts, training data and a bundle, built once in ``work``."""

    def __init__(self, work: Path) -> None:
        from conftest import make_tiny_bert
        from edgeft.deployment.pipeline import DeployOptions, deploy
        from edgeft.exporting.artifacts import ExportOptions, export_artifacts
        from test_train import LABELS, dataset, write_csv

        self.work = work
        self.model = make_tiny_bert(work / "tiny-bert")
        self.labels = work / "labels.txt"
        self.labels.write_text("\n".join(LABELS) + "\n")
        self.artifacts = export_artifacts(ExportOptions(model=str(self.model), label_names=LABELS, train="last:1",
                                                        output=work / "artifacts", force=True)).folder
        self.train_csv = write_csv(work / "train.csv", dataset(2, 60))
        self.val_csv = write_csv(work / "val.csv", dataset(1, 4))
        self.bundle = Path(deploy(DeployOptions(source=self.artifacts, device="raspberry-pi-5", val=self.val_csv,
                                                output=work / "bundle", force=True))["bundle"])


def run_kills(fixtures: Fixtures, kills: int, seed: int, backends: list[str]) -> tuple[dict[str, Any], Any]:
    """Kill trials per backend; returns their reports and the first backend's job and reference run
    (the disk-full cases reuse them)."""
    from reliability_faults import TrainJob, kill_trials, reference_run

    reports, first = {}, None
    for backend in backends:
        job = TrainJob(fixtures.artifacts, fixtures.train_csv, fixtures.work / f"kills-{backend}", backend=backend)
        job.root.mkdir(exist_ok=True)
        reference = reference_run(job)
        first = first or (job, reference)
        log(f"kills ({backend}): reference run {reference.startup:.1f} s start-up + {reference.training:.1f} s training")
        if not kills:
            continue
        report = kill_trials(job, kills, seed=seed, reference=reference, trials=kills,  # >= N trials, >= N kills
                             progress=lambda r: log(f"  trial {r.trials}: {r.kills} kills so far, {r.resumes} "
                                                    f"resumes, {len(r.lost)} lost, {len(r.crashed)} crashed"))
        reports[backend] = {"trials": report.trials, "kills": report.kills, "missed": report.missed,
                            "resumes": report.resumes, "lost": report.lost, "crashed": report.crashed,
                            "moments": report.moments}
    return reports, first


def run_disk_full(fixtures: Fixtures, job: Any, reference: Any, mechanism: str | None) -> dict[str, Any]:
    from reliability_faults import SmallDisk, checkpoint_case, disk_full_case, free_levels
    from edgeft.run import checkpoints

    cases = []
    with SmallDisk(fixtures.work / "disk-full", mechanism=mechanism) as disk:
        log(f"disk full: {disk.mechanism}")
        latest = checkpoints.latest(job.root / "reference")
        for free in [*CHECKPOINT_FREE, *free_levels(disk, latest, (0.5,))]:
            cases.append(checkpoint_case(disk, job, reference, free))
            log(f"  checkpoint, {free} bytes free: {cases[-1].message}")
        target = disk.path / "artifacts"
        shutil.copytree(fixtures.artifacts, target)
        args = ["export", str(fixtures.model), "--labels", str(fixtures.labels), "--train", "last:1", "-o", str(target),
                "--force"]
        for free in free_levels(disk, target, EXPORT_FRACTIONS):
            cases.append(disk_full_case(disk, "export", free, args, target, fixtures.work, device_side=False))
            log(f"  export, {free} bytes free: {cases[-1].message}")
        shutil.rmtree(target)
        target = disk.path / "bundle"
        shutil.copytree(fixtures.bundle, target)
        args = ["deploy", str(fixtures.artifacts), "--device", "raspberry-pi-5", "--val", str(fixtures.val_csv), "-o",
                str(target), "--force"]
        for free in free_levels(disk, target, DEPLOY_FRACTIONS):
            cases.append(disk_full_case(disk, "deploy", free, args, target, fixtures.work))
            log(f"  deploy, {free} bytes free: {cases[-1].message}")
        shutil.rmtree(target)
        mechanism = disk.mechanism
    return {"mechanism": mechanism, "cases": [asdict(case) for case in cases]}


def run_fuzz_all(fixtures: Fixtures, examples: int, seed: int) -> dict[str, Any]:
    from reliability_fuzz import FILE_TYPES, DataTarget, ManifestTarget, ProfileTarget, run_fuzz

    data = DataTarget(fixtures.work / "fuzz-data")
    targets = {kind: data for kind in ("csv", "tsv", "jsonl", "npz", "images")}
    targets["manifests"] = ManifestTarget(fixtures.work / "fuzz-manifests", fixtures.artifacts, fixtures.bundle,
                                          fixtures.val_csv)
    targets["profiles"] = ProfileTarget(fixtures.work / "fuzz-profiles", ROOT / "devices" / "raspberry-pi-5.toml")
    results = {}
    for kind in FILE_TYPES:
        started = time.perf_counter()
        tally = run_fuzz(targets[kind], kind, examples, seed=seed)
        results[kind] = {**tally.counts, "tried": tally.tried, "problems": tally.problems,
                         "seconds": round(time.perf_counter() - started, 1)}
        log(f"fuzz {kind}: {tally.tried} inputs, {tally.counts}")
    return results


def verdict(report: dict[str, Any], wanted: dict[str, int]) -> list[str]:
    """Why the report fails (empty: it passes)."""
    problems = []
    for backend, kills in (report.get("kills") or {}).items():
        if kills["kills"] < wanted["kills"]:
            problems.append(f"{backend}: only {kills['kills']} kills (wanted {wanted['kills']})")
        if not kills["resumes"]:
            problems.append(f"{backend}: no resume started from a checkpoint (every kill came too early)")
        problems += [f"kill: {p}" for p in kills["lost"] + kills["crashed"]]
    disk = report.get("disk_full")
    if disk is not None:
        for operation in ("checkpoint", "export", "deploy"):
            cases = [c for c in disk["cases"] if c["operation"] == operation]
            if not any(c["triggered"] for c in cases):
                problems.append(f"no disk-full case during {operation}")
        for case in disk["cases"]:
            if case["triggered"] and (case["unclear"] or case["lost"]):
                problems.append(f"disk full during {case['operation']} ({case['free']} B free): "
                                f"{case['unclear'] or case['lost']}")
    for kind, tally in (report.get("fuzz") or {}).items():
        if tally["tried"] < wanted["fuzz"]:
            problems.append(f"only {tally['tried']} {kind} inputs fuzzed (wanted {wanted['fuzz']})")
        if not tally["verified"]:
            problems.append(f"{kind}: no valid file of known content was read back")
        if tally["crash"] or tally["unclear"] or tally["wrong"]:
            problems.append(f"{kind}: {tally['crash']} crashes, {tally['unclear']} unclear, {tally['wrong']} read "
                            f"wrongly: {tally['problems'][:1]}")
    return problems


def table(report: dict[str, Any], problems: list[str]) -> str:
    lines = [f"edgeft reliability report (seed {report['seed']}, {report['seconds']:.0f} s)", "",
             f"{'fault injection':<34}{'tried':>7}{'lost data':>11}{'crashed':>9}"]
    for backend, kills in (report.get("kills") or {}).items():
        label = f"SIGKILL, {backend} ({kills['trials']} runs)"
        lines.append(f"{label:<34}{kills['kills']:>7}{len(kills['lost']):>11}{len(kills['crashed']):>9}")
    disk = report.get("disk_full")
    if disk is not None:
        for operation in ("checkpoint", "export", "deploy"):
            cases = [c for c in disk["cases"] if c["operation"] == operation and c["triggered"]]
            label = f"disk full ({disk['mechanism']}): {operation}"
            lines.append(f"{label:<34}{len(cases):>7}{sum(bool(c['lost']) for c in cases):>11}"
                         f"{sum(bool(c['unclear']) for c in cases):>9}")
    fuzz = report.get("fuzz")
    if fuzz:
        columns = ("tried", "verified", "accepted", "refused", "wrong", "unclear", "crash")
        lines += ["", f"{'fuzzed inputs':<26}" + "".join(f"{name:>10}" for name in columns)]
        for kind, tally in fuzz.items():
            lines.append(f"{kind:<26}" + "".join(f"{tally[name]:>10}" for name in columns))
        lines.append(f"{'total':<26}" + "".join(f"{sum(t[name] for t in fuzz.values()):>10}" for name in columns))
    lines += ["", "result: " + ("PASS: no data lost, every resume a resume, no traceback, every refusal clear, "
                                "valid files read back exactly" if not problems
                                else f"FAIL ({len(problems)} problem(s))")]
    lines += [f"  - {p[:300]}" for p in problems[:20]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to land on running edgeft train processes")
    parser.add_argument("--fuzz", type=int, default=1000, help="generated inputs per file type")
    parser.add_argument("--seed", type=int, help="seed of the kill moments and the fuzzer [default: $EDGEFT_SEED, "
                                                 "else a new one, printed]")
    parser.add_argument("--backends", nargs="+", choices=["ort-training", "portable"],
                        help="training backends to kill [default: portable, and ort-training where its API is installed]")
    parser.add_argument("--disk", choices=["auto", "tmpfs", "rlimit"], default="auto",
                        help="how to make the disk full (auto: tmpfs when allowed, else RLIMIT_FSIZE)")
    parser.add_argument("--only", nargs="+", choices=["kills", "disk", "fuzz"], default=["kills", "disk", "fuzz"])
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "reliability")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout (the table to stderr)")
    args = parser.parse_args()
    if args.backends is None:
        from edgeft.ortcompat import has_training_api

        args.backends = ["portable", *(["ort-training"] if has_training_api() else [])]

    from reliability_fuzz import SEED_ENV, run_seed

    if args.seed is not None:
        os.environ[SEED_ENV] = str(args.seed)
    seed = run_seed()
    log(f"seed {seed} (--seed {seed} repeats this run)")
    started = time.perf_counter()
    report: dict[str, Any] = {"seed": seed, "wanted": {"kills": args.kills, "fuzz": args.fuzz}}
    with tempfile.TemporaryDirectory(prefix="edgeft-reliability-") as tmp:
        log("building a tiny BERT, its artifacts and a bundle")
        fixtures = Fixtures(Path(tmp))
        job = reference = None
        if "kills" in args.only or "disk" in args.only:
            report["kills"], (job, reference) = run_kills(fixtures, args.kills if "kills" in args.only else 0, seed,
                                                          args.backends)
            if "kills" not in args.only:
                del report["kills"]
        if "disk" in args.only:
            report["disk_full"] = run_disk_full(fixtures, job, reference, None if args.disk == "auto" else args.disk)
        if "fuzz" in args.only:
            report["fuzz"] = run_fuzz_all(fixtures, args.fuzz, seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    problems = verdict(report, report["wanted"])
    report["problems"] = problems
    report["passed"] = not problems
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = table(report, problems) + f"\n\nJSON report: {args.out / 'report.json'}"
    if args.json:
        log(text)
        print(json.dumps(report, indent=2, default=str))
    else:
        print(text)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
