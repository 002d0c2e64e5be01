"""Fault injection, shared by tests/test_reliability.py (a few trials in CI) and tools/reliability.py
(the full counts for the reliability report).

- ``kill_trials``: ``edgeft train`` (either backend) is killed with SIGKILL at seeded random
  moments (once or several times, also while it resumes); after every kill each checkpoint on
  disk must load, and ``--resume`` must finish with exactly the result of an uninterrupted run
  (weights bit for bit, the best checkpoint, the metrics history and the summary). Every resumed
  process must also be a resume, not a restart that happens to reach the same weights: it starts
  at the step of the newest checkpoint on disk, runs only the steps after it, and leaves the
  checkpoints that were there unchanged (read from the progress events it reports, see ``SPY``).
- ``SmallDisk`` + ``disk_full_case``: ``edgeft train --resume`` (checkpoint), ``edgeft export``
  and ``edgeft deploy`` run on a full disk (a small tmpfs, temporary folder included, or when
  mounting is not allowed a file-size limit, RLIMIT_FSIZE); each must fail with one clear
  "error:" message and leave the previous checkpoint, artifact folder or bundle byte-identical.

Every edgeft process runs the real CLI in a fresh interpreter; device-side commands run with
torch and transformers blocked, as on a device.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conftest import BLOCK_HEAVY

SUMMARY_KEYS = ("epochs", "steps", "after", "best", "early_stopped", "train_examples", "val_examples")
DISK_MESSAGES = ("the disk is full", "File too large", "could not be written")


# ---- running edgeft ------------------------------------------------------------------------------------------

EVENTS_ENV = "EDGEFT_TEST_EVENTS"
# With EVENTS_ENV set, the silent reporter of `edgeft train --json` also appends each progress
# event (message, start, step) as a JSON line to that file, tagged with the process id: what a
# process really did, also when it is killed a moment later (one line written per event).
SPY = f"""
import json as _json, os as _os
if _os.environ.get({EVENTS_ENV!r}):
    import edgeft.reporter as _reporter

    class _Events(_reporter.Reporter):
        def __init__(self):
            self._file = open(_os.environ[{EVENTS_ENV!r}], "a", buffering=1, encoding="utf-8")

        def _write(self, **event):
            self._file.write(_json.dumps({{"pid": _os.getpid(), **event}}) + "\\n")

        def message(self, text):
            self._write(event="message", text=text)

        def start(self, total_steps, done_steps, epochs):
            self._write(event="start", total=total_steps, done=done_steps)

        def step(self, step, loss, examples_per_second, lr):
            self._write(event="step", step=step)

    _reporter.Reporter = _Events  # what as_reporter(None) makes: the silent reporter of --json
"""


def command(args: list[str], device_side: bool = True) -> list[str]:
    """``edgeft ARGS`` in a fresh interpreter (torch and transformers blocked on the device side)."""
    code = (BLOCK_HEAVY if device_side else "") + SPY + f"from edgeft.cli import main\nmain({[str(a) for a in args]!r})\n"
    return [sys.executable, "-c", code]


def read_events(path: Path) -> dict[int, list[dict[str, Any]]]:
    """The progress events of each process (by pid), in order; a line cut by a kill is skipped."""
    found: dict[int, list[dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        found.setdefault(event.pop("pid"), []).append(event)
    return found


def run_edgeft(args: list[str], cwd: Path, device_side: bool = True, env: dict[str, str] | None = None,
               preexec: Callable[[], None] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command(args, device_side), cwd=cwd, env=env, preexec_fn=preexec, capture_output=True,
                          text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (empty when it does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{name} {'removed' if name not in after else 'added' if name not in before else 'changed'}"
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]


def leftovers(folder: Path) -> list[str]:
    """Staging folders and temp files a write left behind next to or inside ``folder``."""
    places = [folder.parent, *[p for p in folder.rglob("*") if p.is_dir()]] if folder.exists() else [folder.parent]
    return sorted(str(p) for place in places for p in place.iterdir()
                  if p.name.startswith(".") and (p.name.endswith((".partial", ".tmp")) or ".old-" in p.name))


def failed_cleanly(out: subprocess.CompletedProcess) -> str:
    """'' when ``out`` is one clear user error (exit 1, "error:", where, what to do, no traceback)."""
    if "Traceback" in out.stderr:
        return "traceback: " + out.stderr[-800:]
    if out.returncode != 1 or "\nerror: " not in "\n" + out.stderr:  # progress lines may come first
        return f"exit {out.returncode}, stderr: {out.stderr[-400:]!r}"
    if "  where: " not in out.stderr or "  what to do: " not in out.stderr:
        return f"message without where / what to do: {out.stderr[-400:]!r}"
    return ""


# ---- training runs and their results -------------------------------------------------------------------------


def run_result(run_dir: Path) -> dict[str, Any]:
    """What a finished run produced: final and best weights, metrics history, summary."""
    from edgeft.run import checkpoints
    from edgeft.evaluation.evaluate import checkpoint_parameters
    from edgeft.training.loop import METRICS_FILE, SUMMARY_FILE

    latest = checkpoints.latest(run_dir)
    best = run_dir / checkpoints.BEST
    history = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    return {
        "latest": latest.name if latest else None,
        "weights": checkpoint_parameters(latest) if latest else {},
        "best": checkpoint_parameters(best) if (best / checkpoints.STATE).is_file() else {},
        "history": [{k: v for k, v in entry.items() if k != "seconds"} for entry in history],
        "summary": {key: summary.get(key) for key in SUMMARY_KEYS},
    }


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """How a resumed run's result differs from the uninterrupted one (empty: identical)."""
    problems = []
    for key in ("latest", "summary"):
        if expected[key] != got[key]:
            problems.append(f"{key}: expected {str(expected[key])[:300]}, got {str(got[key])[:300]}")
    if len(expected["history"]) != len(got["history"]):
        problems.append(f"history: {len(got['history'])} epochs instead of {len(expected['history'])}")
    for want, have in zip(expected["history"], got["history"]):
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                problems.append(f"history: epoch {want.get('epoch')} {name} {want.get(name)} != {have.get(name)}")
    for key in ("weights", "best"):
        if expected[key].keys() != got[key].keys():
            problems.append(f"{key}: tensors {sorted(expected[key])} != {sorted(got[key])}")
            continue
        for name, value in expected[key].items():
            if value.dtype != got[key][name].dtype or not np.array_equal(value, got[key][name]):
                problems.append(f"{key}: {name} differs (max {np.max(np.abs(value - got[key][name])):.3g})")
    return problems


def damaged_checkpoints(run_dir: Path) -> list[str]:
    """Checkpoints listed in a run folder that do not load (ORT checkpoint and loop state)."""
    from edgeft.run import checkpoints
    from edgeft.evaluation.evaluate import checkpoint_parameters

    folders = checkpoints.listed(run_dir)
    if (run_dir / checkpoints.BEST / checkpoints.STATE).is_file():
        folders.append(run_dir / checkpoints.BEST)
    problems = []
    for folder in folders:
        try:
            checkpoints.load_state(folder)
            params = checkpoint_parameters(folder)
            assert params and all(np.isfinite(v).all() for v in params.values()), "no or non-finite parameters"
        except Exception as exc:  # noqa: BLE001 - any failure to load is lost work
            problems.append(f"{folder.name} does not load: {exc}")
    return problems


@dataclass
class TrainJob:
    """One ``edgeft train`` configuration, run in folders under ``root``."""

    artifacts: Path
    data: Path
    root: Path
    backend: str = "portable"
    options: tuple[str, ...] = ("--epochs", "3", "--batch-size", "2", "--checkpoint-every", "7", "--threads", "1",
                                "--seed", "5", "--json")

    def args(self, run_dir: Path, resume: bool = False) -> list[str]:
        return ["train", str(self.artifacts), str(self.data), *self.options, "--backend", self.backend,
                "--run-dir", str(run_dir), *(["--resume"] if resume else [])]

    def start(self, run_dir: Path, resume: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(command(self.args(run_dir, resume)), cwd=self.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpoint_marks(run_dir: Path) -> dict[str, tuple[int, dict[str, str]]]:
    """Each step checkpoint of a run: the folder's inode (a rewrite renames a new folder into
    place) and the sha256 of its files."""
    from edgeft.run import checkpoints

    return {folder.name: (folder.stat().st_ino, snapshot(folder)) for folder in checkpoints.listed(run_dir)}


def resumed_at(run_dir: Path) -> tuple[str, int]:
    """Where ``--resume`` must continue: the newest checkpoint's name and step ("the start", 0 if none)."""
    from edgeft.run import checkpoints

    latest = checkpoints.latest(run_dir)
    if latest is None:
        return "the start", 0
    return latest.name, int(json.loads((latest / checkpoints.STATE).read_text(encoding="utf-8"))["step"])


def resume_problems(events: list[dict[str, Any]], at: tuple[str, int], before: dict[str, tuple[int, dict[str, str]]],
                    after: dict[str, tuple[int, dict[str, str]]], finished: bool) -> list[str]:
    """How one ``--resume`` process was not a resume from ``at``: its start, the steps it ran (all
    of the remaining ones when it ``finished``), or a checkpoint it found on disk that changed."""
    name, step = at
    problems = []
    said = next((e["text"] for e in events if e["event"] == "message" and e["text"].startswith("resuming from")), None)
    if said is not None and not (said.startswith(f"resuming from {name} (") and f", step {step})" in said):
        problems.append(f"said {said!r}, but the newest checkpoint is {name} (step {step})")
    starts = [e for e in events if e["event"] == "start"]
    if starts and starts[0]["done"] != step:
        problems.append(f"started at step {starts[0]['done']} instead of {step} ({name}): a restart, not a resume")
    ran = [e["step"] for e in events if e["event"] == "step"]
    if ran != list(range(step + 1, step + 1 + len(ran))):
        problems.append(f"ran steps {ran[:3]}...{ran[-3:]} after resuming at step {step}")
    if finished and (not starts or ran != list(range(step + 1, starts[0]["total"] + 1))):
        total = starts[0]["total"] if starts else "?"
        problems.append(f"finished after running {len(ran)} steps; {total} - {step} remained")
    for folder, mark in before.items():
        if folder in after and after[folder] != mark:
            problems.append(f"the checkpoint {folder} it resumed among was rewritten")
    return problems


def wait_for(path_test: Callable[[], bool], process: subprocess.Popen, timeout: float = 300) -> bool:
    """Poll until ``path_test()`` holds (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path_test():
            return True
        if process.poll() is not None:
            return path_test()
        time.sleep(0.002)
    raise TimeoutError("the training process made no progress")


@dataclass
class Reference:
    """The uninterrupted run: its result, and how long start-up and training take (for kill moments)."""

    result: dict[str, Any]
    startup: float  # process start until run.json exists
    training: float  # run.json until the process ends


def reference_run(job: TrainJob) -> Reference:
    from edgeft.training.loop import RUN_FILE

    run_dir = job.root / "reference"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.monotonic()
    process = job.start(run_dir)
    wait_for(lambda: (run_dir / RUN_FILE).is_file(), process)
    ready = time.monotonic()
    _, err = process.communicate(timeout=600)
    if process.returncode != 0:
        raise RuntimeError(f"the reference run failed: {err[-2000:]}")
    return Reference(run_result(run_dir), ready - started, time.monotonic() - ready)


# ---- SIGKILL ---------------------------------------------------------------------------------------------------


@dataclass
class KillReport:
    trials: int = 0
    kills: int = 0  # SIGKILLs that hit a running process
    missed: int = 0  # the process had finished before its kill moment
    resumes: int = 0  # --resume processes started when a checkpoint with step > 0 was on disk
    lost: list[str] = field(default_factory=list)  # damaged checkpoints or a result unlike the reference
    crashed: list[str] = field(default_factory=list)  # tracebacks or failed resumes
    moments: list[str] = field(default_factory=list)  # where each kill landed, e.g. "run 1: 0.84 s (62%)"


def _resume(job: TrainJob, run_dir: Path, events: Path, report: KillReport, label: str,
            finish: Callable[[subprocess.Popen], None]) -> subprocess.Popen:
    """Start ``--resume`` (or the first run), let ``finish`` end it (a kill, or waiting), and check
    that it continued from the newest checkpoint on disk."""
    from edgeft.training.loop import RUN_FILE

    resume = (run_dir / RUN_FILE).is_file()
    at, before = resumed_at(run_dir), checkpoint_marks(run_dir)
    process = job.start(run_dir, resume=resume, env={**os.environ, EVENTS_ENV: str(events)})
    finish(process)
    if resume:
        report.resumes += at[1] > 0
        mine = read_events(events).get(process.pid, [])
        report.lost += [f"{label}: {p}" for p in resume_problems(mine, at, before, checkpoint_marks(run_dir),
                                                                 finished=process.returncode == 0)]
    return process


def kill_trial(job: TrainJob, reference: Reference, seed: int, report: KillReport) -> None:
    """Kill one run 1-3 times at seeded random moments (resumes included), then resume it to the end."""
    from edgeft.training.loop import RUN_FILE

    rng = random.Random(seed)
    run_dir = job.root / f"killed-{seed}"
    events = job.root / f"events-{seed}.jsonl"
    shutil.rmtree(run_dir, ignore_errors=True)
    events.unlink(missing_ok=True)
    report.trials += 1
    for attempt in range(rng.choice([1, 1, 2, 3])):
        label = f"{job.backend} seed {seed} run {attempt + 1}"
        outcome: dict[str, Any] = {}

        def kill(process: subprocess.Popen) -> None:
            if (run_dir / RUN_FILE).is_file():  # any moment of a resumed run, its start-up included
                window = reference.startup + reference.training
                started = wait_for(lambda: True, process)
            else:  # the first run: a moment after the run folder exists, so that there is a run to resume
                window = reference.training
                started = wait_for(lambda: (run_dir / RUN_FILE).is_file(), process)
            delay = rng.uniform(0, window)
            if started:
                time.sleep(delay)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            outcome["err"] = process.communicate(timeout=600)[1]
            outcome["moment"] = f"{label}: {delay:.2f} s ({100 * delay / window:.0f}%)"

        process = _resume(job, run_dir, events, report, label, kill)
        if process.returncode == -signal.SIGKILL:
            report.kills += 1
            report.moments.append(outcome["moment"])
        elif process.returncode == 0:
            report.missed += 1
        else:
            report.crashed.append(f"{label} exited {process.returncode}: {outcome['err'][-600:]}")
        report.lost += [f"{label}: {p}" for p in damaged_checkpoints(run_dir)]
    outcome = {}
    final = _resume(job, run_dir, events, report, f"{job.backend} seed {seed} final --resume",
                    lambda process: outcome.update(err=process.communicate(timeout=600)[1]))
    if final.returncode != 0 or "Traceback" in outcome["err"]:
        report.crashed.append(f"{job.backend} seed {seed}: --resume failed ({final.returncode}): {outcome['err'][-800:]}")
        return
    report.lost += [f"{job.backend} seed {seed}: {p}" for p in differences(reference.result, run_result(run_dir))]
    report.lost += [f"{job.backend} seed {seed}: left behind {p}" for p in leftovers(run_dir)]
    shutil.rmtree(run_dir, ignore_errors=True)
    events.unlink(missing_ok=True)


def kill_trials(job: TrainJob, kills: int, seed: int = 0, reference: Reference | None = None, trials: int = 0,
                progress: Callable[[KillReport], None] | None = None) -> KillReport:
    """Trials with seeds ``seed, seed + 1, ...`` until at least ``kills`` kills hit a running process
    and at least ``trials`` trials ran."""
    reference = reference or reference_run(job)
    report = KillReport()
    trial = seed
    while (report.kills < kills or report.trials < trials) and report.trials < 4 * max(kills, trials) + 4:
        kill_trial(job, reference, trial, report)
        trial += 1
        if progress:
            progress(report)
    return report


# ---- a full disk -----------------------------------------------------------------------------------------------


def can_mount_tmpfs(probe_dir: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe_dir.mkdir(parents=True, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe_dir)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(probe_dir)], capture_output=True)
    probe_dir.rmdir()
    return ok


class SmallDisk:
    """A folder on a file system that can be filled up, for the edgeft processes run on it.

    ``tmpfs``: a small tmpfs mounted at the folder (needs root); children get TMPDIR inside it, so
    their temporary files meet the full disk too. ``rlimit``: an ordinary folder, and children run
    with RLIMIT_FSIZE (no file they write may grow beyond the limit; SIGXFSZ is ignored so the
    write fails with EFBIG). ``EDGEFT_DISK_FULL=rlimit`` forces the second.
    """

    def __init__(self, root: Path, size_mb: int = 64, mechanism: str | None = None) -> None:
        self.path = Path(root) / "disk"
        self.path.mkdir(parents=True, exist_ok=True)
        wanted = mechanism or os.environ.get("EDGEFT_DISK_FULL") or "auto"
        self.mechanism = wanted if wanted != "auto" else ("tmpfs" if can_mount_tmpfs(Path(root) / "probe") else "rlimit")
        if self.mechanism == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(self.path)], check=True,
                           capture_output=True)
        self.tmp = self.path / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.ballast = self.path / "ballast"
        self.limit: int | None = None

    def fill(self, free: int) -> None:
        """Leave about ``free`` bytes writable (tmpfs: a ballast file; rlimit: the largest file size)."""
        if self.mechanism == "rlimit":
            self.limit = free
            return
        stat = os.statvfs(self.path)
        size = max(stat.f_bavail * stat.f_frsize - free, 0)
        with open(self.ballast, "wb") as handle:
            chunk = b"\0" * (1 << 20)
            try:
                while size > 0:
                    size -= handle.write(chunk[: min(size, len(chunk))])
            except OSError as exc:  # filled up to the last page
                if exc.errno != errno.ENOSPC:
                    raise

    def empty(self) -> None:
        self.limit = None
        self.ballast.unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.tmp)} if self.mechanism == "tmpfs" else dict(os.environ)

    def preexec(self) -> Callable[[], None] | None:
        if self.limit is None:
            return None
        limit = self.limit

        def limited() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return limited

    def close(self) -> None:
        self.empty()
        if self.mechanism == "tmpfs":
            subprocess.run(["umount", str(self.path)], capture_output=True)
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> SmallDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class DiskFullCase:
    operation: str  # checkpoint, export or deploy
    free: int  # bytes left writable
    mechanism: str
    message: str = ""  # the first line printed
    triggered: bool = True  # False: the command succeeded (the disk was not full enough)
    unclear: str = ""  # not one clear error naming the full disk
    lost: list[str] = field(default_factory=list)  # changes to the previous folder, debris
    after: str = ""  # what happened once space was freed (checkpoint: --resume to the end)


def disk_full_case(disk: SmallDisk, operation: str, free: int, args: list[str], target: Path, cwd: Path,
                   device_side: bool = True) -> DiskFullCase:
    """Run ``edgeft ARGS`` with only ``free`` bytes left; ``target`` (the previous result) must not change."""
    case = DiskFullCase(operation, free, disk.mechanism)
    before = snapshot(target)
    disk.fill(free)
    try:
        out = run_edgeft(args, cwd, device_side=device_side, env=disk.env(), preexec=disk.preexec())
    finally:
        disk.empty()
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    case.message = errors[0] if errors else out.stderr.strip()[-200:] or f"(exit {out.returncode})"
    if out.returncode == 0:
        case.triggered = False
        return case
    case.unclear = failed_cleanly(out)
    if not case.unclear and not any(text in out.stderr for text in DISK_MESSAGES):
        case.unclear = f"the message does not say the disk is full: {out.stderr[-400:]!r}"
    case.lost = changed(before, snapshot(target)) + [f"left behind {p}" for p in leftovers(target)]
    return case


def checkpoint_case(disk: SmallDisk, job: TrainJob, reference: Reference, free: int) -> DiskFullCase:
    """A run killed after its first checkpoint resumes on a full disk; after freeing space it resumes
    to exactly the reference result."""
    from edgeft.run import checkpoints

    run_dir = disk.path / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    process = job.start(run_dir, env=disk.env())
    wait_for(lambda: bool(checkpoints.listed(run_dir)), process)
    process.kill()
    process.communicate()
    case = disk_full_case(disk, "checkpoint", free, job.args(run_dir, resume=True), run_dir, job.root)
    if case.triggered:
        final = run_edgeft(job.args(run_dir, resume=True), job.root, env=disk.env())
        if final.returncode != 0:
            case.after = f"--resume after freeing space failed: {final.stderr[-600:]}"
        else:
            problems = differences(reference.result, run_result(run_dir))
            case.lost += [f"after --resume: {p}" for p in problems]
            case.after = "--resume after freeing space gave the uninterrupted result" if not problems else "differs"
    shutil.rmtree(run_dir, ignore_errors=True)
    return case


def free_levels(disk: SmallDisk, folder: Path, fractions: tuple[float, ...]) -> list[int]:
    """Bytes to leave writable so that writing something like ``folder`` again fails part-way:
    fractions of its total size (tmpfs) or of its largest file (rlimit, a per-file limit)."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    whole = sum(sizes) if disk.mechanism == "tmpfs" else max(sizes)
    return [int(fraction * whole) for fraction in fractions]
