#!/usr/bin/env python
"""Mutation testing of the code whose bugs lose work or ship a bad model: resume, checkpoint
verification, the accuracy guard and the embedding task's loss, batches and metrics. Do the
tests notice a plausible bug?

Usage: python tools/mutants.py [--only resume verify guard embedding gradients] [--list] [--json]

Each mutant below is one hand-written plausible bug (a line changed as a person might get it
wrong). The script copies the repository (tracked and new files) to a temporary folder, checks
that the tests of each area pass there unchanged, then applies one mutant at a time and runs
that area's tests (``pytest -x``, first failure ends the run; edgeft is imported from the copy,
in subprocesses too, through PYTHONPATH). A mutant is *killed* when a test fails, *survived*
when all pass; a mutant whose text is no longer in the source is *stale* (update the list).
The working tree is never changed. Exit status 1 when a mutant survived or went stale.

mutmut was not used: it mutates every line of a module and re-runs the tests per mutant, and
these tests start real training processes and SIGKILL them, so each run takes tens of seconds;
a list of bugs someone could really write, aimed at these three areas, is both faster and more
telling. A run takes about 10-20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The tests each area's mutants run, fastest discriminating ones first (pytest -x stops at the first failure).
AREAS = {
    "resume": ["tests/test_resume.py", "tests/test_reliability.py::test_sigkill_at_random_moments_never_loses_work",
               "tests/test_reliability.py::test_full_disk_during_a_checkpoint",
               "tests/test_train.py::test_resume_after_sigkill_matches_uninterrupted_run",
               "tests/test_portable.py::test_checkpoint_resumes_in_the_other_backend",
               "tests/test_train.py::test_run_dir_rules",
               "tests/test_reliability.py::test_a_run_killed_between_the_renames_of_a_replace_gets_its_best_checkpoint_back"],
    "verify": ["tests/test_train.py::test_a_checkpoint_without_its_hash_record_is_refused_unless_it_predates_it",
               "tests/test_train.py::test_damaged_checkpoints_are_refused",
               "tests/test_reliability.py::test_a_damaged_run_record_or_checkpoint_state_is_a_clear_error"],
    "guard": ["tests/test_guard.py", "tests/test_deploy.py::test_guard_sizes_and_pools_its_check",
              "tests/test_deploy.py::test_accuracy_guard_falls_back_with_zero_tolerance",
              "tests/test_deploy.py::test_quantized_bundle_is_smaller_and_accurate",
              "tests/test_deploy.py::test_every_profile_deploys_and_predicts"],
    "embedding": ["tests/test_embedding.py"],
    "losses": ["tests/test_portable.py::test_mlp_gradients_match_pytorch_autograd_for_every_loss", "tests/test_l2sp.py"],
    "profiles": ["tests/test_devices.py", "tests/test_build.py::test_build_file_errors_name_build_and_field",
                 "tests/test_guard.py"],
    "gradients": ["tests/test_architecture_gradients.py"],
}


@dataclass(frozen=True)
class Mutant:
    area: str
    name: str
    path: str
    old: str  # replaced by new, once; then each (old, new) pair of more
    new: str
    more: tuple[tuple[str, str], ...] = ()


LOOP, CHECKPOINTS, STATE = "edgeft/training/loop.py", "edgeft/run/checkpoints.py", "edgeft/backends/state.py"
GUARD, PIPELINE = "edgeft/deployment/guard.py", "edgeft/deployment/pipeline.py"
LOSSES, BATCHING, METRICS = "edgeft/exporting/losses.py", "edgeft/data/batching.py", "edgeft/evaluation/metrics.py"
RECORDS, SPLIT = "edgeft/data/records.py", "edgeft/data/split.py"
CONV_RULES, PORTABLE = "edgeft/exporting/conv_rules.py", "edgeft/exporting/portable.py"
VALIDATION, DEVICES = "edgeft/validation.py", "edgeft/devices.py"
RESUME_LINE = "    latest = checkpoints.latest(run_dir) if resume else None\n"
STEP_CHECKPOINT = "                    checkpoint(checkpoints.step_folder(run_dir, state.step))\n"

MUTANTS = [
    # --- resume -------------------------------------------------------------------------------------------
    Mutant("resume", "--resume ignores the checkpoint and starts over", LOOP, RESUME_LINE, "    latest = None\n"),
    Mutant("resume", "--resume starts over and silently replaces the checkpoints it meets", LOOP, RESUME_LINE,
           "    latest = None\n", ((STEP_CHECKPOINT, STEP_CHECKPOINT.replace("state.step))",
                                                                       "state.step), force_replace=True)")),)),
    Mutant("resume", "resume loads the weights but not the loop position", LOOP,
           "    state = checkpoints.load_state(latest) if latest else checkpoints.LoopState()\n",
           "    state = checkpoints.LoopState()\n"),
    Mutant("resume", "resume restores the loop position but not the weights", LOOP,
           "    trainer = _open_trainer(manifest, config, run_dir, threads, latest,",
           "    trainer = _open_trainer(manifest, config, run_dir, threads, None,"),
    Mutant("resume", "a resumed epoch replays its batches from the start", LOOP,
           "        for index in range(state.batch, len(order)):", "        for index in range(0, len(order)):"),
    Mutant("resume", "a resumed epoch forgets the training losses before the checkpoint", LOOP,
           "        train_losses: list[float] = []\n",
           "        train_losses: list[float] = []\n        state.loss_sum, state.loss_count = 0.0, 0\n"),
    Mutant("resume", "the dropout step counter starts again at 0 on resume", LOOP,
           "    state = checkpoints.load_state(latest) if latest else checkpoints.LoopState()\n",
           "    state = checkpoints.load_state(latest) if latest else checkpoints.LoopState()\n    state.micro = 0\n"),
    Mutant("resume", "the newest checkpoint is taken from the wrong end", CHECKPOINTS,
           "    return found[-1] if found else None", "    return found[0] if found else None"),
    Mutant("resume", "pruning removes the newest checkpoints", CHECKPOINTS,
           "    for old in listed(run_dir)[:-keep] if keep > 0 else []:",
           "    for old in listed(run_dir)[keep:] if keep > 0 else []:"),
    Mutant("resume", "a checkpoint is listed before its state is written", CHECKPOINTS,
           'if p.name.startswith("step-") and (p / STATE).is_file())', 'if p.name.startswith("step-"))'),
    Mutant("resume", "a mid-epoch checkpoint records the batch before the step", LOOP,
           "            state.batch = index + 1\n", "            state.batch = index\n"),
    # --- checkpoint verification --------------------------------------------------------------------------
    Mutant("verify", "a checkpoint without its hash record is read unchecked", STATE,
           "        if (folder / LOOP_FILE).is_file() and not _predates_record(folder):", "        if False:"),
    Mutant("verify", "the recorded hashes are never compared", STATE,
           "        if sha256_file(path) != digest:", "        if False:"),
    Mutant("verify", "a recorded file that is missing is skipped", STATE,
           '            raise EdgeftError(f"The checkpoint file {path.name} is missing."', "            continue\n"
           '            raise EdgeftError(f"The checkpoint file {path.name} is missing."'),
    Mutant("verify", "the format marker is not written", CHECKPOINTS,
           "        marked = {**state, FORMAT_KEY: CHECKPOINT_FORMAT}", "        marked = dict(state)"),
    Mutant("verify", "the record leaves out the trainable state", STATE,
           "if p.is_file() and p.name != HASHES_FILE}", "if p.is_file() and p.name not in (HASHES_FILE, STATE_FILE)}"),
    Mutant("verify", "evaluate and deploy read a checkpoint without verifying it", STATE,
           "    path = Path(path)\n    verify_checkpoint(path)\n", "    path = Path(path)\n"),
    Mutant("verify", "--resume reads the loop state without verifying it", CHECKPOINTS,
           "    verify_checkpoint(folder)\n    try:", "    try:"),
    Mutant("verify", "an unreadable state.json counts as an old checkpoint", STATE,
           "    except (OSError, ValueError, RecursionError):\n        return False",
           "    except (OSError, ValueError, RecursionError):\n        return True"),
    # --- the accuracy guard -------------------------------------------------------------------------------
    Mutant("guard", "the ladder jumps straight to fp32", GUARD,
           '    yield "the profile\'s recipe", recipe\n',
           '    yield "the profile\'s recipe", recipe\n    if recipe.mode != "none":\n'
           '        yield "no quantization (fp32)", recipe.model_copy(update=dict(mode="none"))\n    return\n'),
    Mutant("guard", "the ladder skips per-channel scales", GUARD,
           '    if recipe.mode in ("dynamic", "static") and not recipe.per_channel:',
           '    if recipe.mode in ("dynamic", "static") and not recipe.per_channel and False:'),
    Mutant("guard", "the head step drops the per-channel scales", GUARD,
           "        recipe = recipe.model_copy(update=dict(exclude_nodes=tuple(recipe.exclude_nodes) + tuple(head_patterns)))",
           "        recipe = recipe.model_copy(update=dict(per_channel=False, exclude_nodes=tuple(recipe.exclude_nodes)"
           " + tuple(head_patterns)))"),
    Mutant("guard", "weight-only int8 forgets the nodes kept in fp32", GUARD,
           '        recipe = recipe.model_copy(update=dict(mode="weight-only", weight_type="int8"))',
           '        recipe = recipe.model_copy(update=dict(mode="weight-only", weight_type="int8", exclude_nodes=()))'),
    Mutant("guard", "the embeddings step comes before the head step", GUARD,
           '    if recipe.mode in ("dynamic", "static", "weight-only") and head_patterns:',
           '    if recipe.mode != "none" and recipe.quantize_embeddings:\n'
           '        recipe = recipe.model_copy(update=dict(quantize_embeddings=False))\n'
           '        yield "embedding table kept in fp32", recipe\n'
           '    if recipe.mode in ("dynamic", "static", "weight-only") and head_patterns:'),
    Mutant("guard", "no head is found to keep in fp32", GUARD,
           '    return sorted("^/" + module.replace(".", "/") + "/" for module in modules if module)', "    return []"),
    Mutant("guard", "a drop equal to the tolerance is refused", PIPELINE,
           "            accepted = drop <= max_drop + 1e-9", "            accepted = drop < max_drop"),
    Mutant("guard", "the drop is measured the wrong way round", GUARD,
           '    return 100.0 * (reference[metric] - candidate[metric])',
           '    return 100.0 * (candidate[metric] - reference[metric])'),
    Mutant("guard", "the regression drop is absolute, not relative", GUARD,
           '        return 100.0 * (candidate[metric] - reference[metric]) / max(reference[metric], 1e-12)',
           '        return 100.0 * (candidate[metric] - reference[metric])'),
    Mutant("guard", "the guard judges the validation examples alone, without the top-up", PIPELINE,
           "            drop = quality_drop(task, fp32_guard, quant_guard)",
           "            drop = quality_drop(task, fp32_metrics, quant_metrics)"),
    Mutant("guard", "the guard check is not topped up for a small validation set", PIPELINE,
           "        extra_set = _guard_top_up(train, val, examples_needed(task, max_drop))",
           "        extra_set = None"),
    # --- the embedding task -------------------------------------------------------------------------------
    Mutant("embedding", "an example counts itself as its positive", LOSSES,
           'helper.make_node("And", [n["same"], n["others"]], [n["positive"]])',
           'helper.make_node("And", [n["same"], n["same"]], [n["positive"]])'),
    Mutant("embedding", "the temperature multiplies instead of dividing", LOSSES,
           'np.array(1.0 / temperature, np.float32)', 'np.array(temperature, np.float32)'),
    Mutant("embedding", "batches are dealt one example at a time, groups scattered", BATCHING,
           "        cut = [group[start:start + 2] for start in range(0, len(group), 2)]",
           "        cut = [[index] for index in group]"),
    Mutant("embedding", "a query retrieves itself", METRICS,
           "        similarity[np.arange(len(rows)), rows] = -np.inf\n", ""),
    Mutant("embedding", "the epochs' steps are counted from the first epoch alone", LOOP,
           "        total_steps = sum(epoch_steps(epoch) for epoch in range(epochs))",
           "        total_steps = epochs * epoch_steps(0)"),
    Mutant("embedding", "the two texts of a pair land in different groups", RECORDS,
           "        if a != b:\n            parent[b] = a", "        if False:\n            parent[b] = a"),
    Mutant("embedding", "the validation split cuts pairs in two", SPLIT,
           "for m in members if len(m) >= 4]", "for m in members if len(m) >= 2]"),
    Mutant("embedding", "lone texts are held out for validation, where nothing finds them", SPLIT,
           "    small = [m for m in members if 2 <= len(m) < 4]", "    small = [m for m in members if len(m) < 4]"),
    Mutant("embedding", "a long batch runs in pieces (in-batch negatives lost)", LOOP,
           "if trainer.weighted_steps and not contrastive else", "if trainer.weighted_steps else"),
    Mutant("embedding", "the guard tops up with scattered examples", PIPELINE,
           '    if train.manifest.data["task"] == "embedding":', '    if False:'),
    # --- portable gradients of convolutions ---------------------------------------------------------------
    Mutant("gradients", "a depthwise kernel's rows and columns are swapped", CONV_RULES,
           "            start = [a * dilation_h, b * dilation_w]", "            start = [b * dilation_h, a * dilation_w]"),
    Mutant("gradients", "a depthwise window ignores the stride", CONV_RULES,
           "ctx.b.ints([stride_h, stride_w])], stem=\"dw_window\")", "ctx.b.ints([1, 1])], stem=\"dw_window\")"),
    Mutant("gradients", "a depthwise window ignores the padding", CONV_RULES,
           "                      stem=\"dw_padded\") if any(pads) else x", "                      stem=\"dw_padded\") if False else x"),
    Mutant("gradients", "the transposed convolution forgets the rows a stride left unread", CONV_RULES,
           "        transposed = dict(attrs, output_padding=unread)", "        transposed = dict(attrs)"),
    Mutant("gradients", "a run-time Tile's copies are interleaved instead of concatenated", PORTABLE,
           '                  helper.make_node("Concat", columns, [pairs], axis=1),',
           '                  helper.make_node("Concat", columns[::-1], [pairs], axis=1),'),
    # --- the loss blocks ----------------------------------------------------------------------------------
    Mutant("losses", "binary cross-entropy forgets the negatives", LOSSES,
           'helper.make_node("Add", [pos, negs], [total]),', 'helper.make_node("Add", [pos, pos], [total]),'),
    Mutant("losses", "the mean absolute error squares", LOSSES,
           'helper.make_node("Abs", [diff], [elem])', 'helper.make_node("Mul", [diff, diff], [elem])'),
    Mutant("losses", "L2-SP adds its term to nothing", LOSSES,
           "        self.task.write(graph, names, output, loss)\n        task = names(\"loss.task\")\n",
           "        task = names(\"loss.task\")\n"),
    Mutant("losses", "L2-SP leaves out the half of its strength", "edgeft/exporting/l2sp.py",
           "np.array(0.5, np.float32)", "np.array(1.0, np.float32)"),
    # --- device profiles and build files checked by their models ------------------------------------------
    Mutant("profiles", "TOML's types are converted instead of refused", VALIDATION,
           'model_config = ConfigDict(extra="forbid", strict=True, frozen=True)',
           'model_config = ConfigDict(extra="forbid", strict=False, frozen=True)'),
    Mutant("profiles", "unknown keys are allowed", VALIDATION,
           'model_config = ConfigDict(extra="forbid", strict=True, frozen=True)',
           'model_config = ConfigDict(extra="ignore", strict=True, frozen=True)'),
    Mutant("profiles", "a misspelt table is reported as the missing one", VALIDATION,
           'key=lambda e: (e["type"] != "extra_forbidden", len(e["loc"]))', 'key=lambda e: 0'),
    Mutant("profiles", "an array may list an entry twice", VALIDATION,
           "    if repeated:\n        raise rule(", "    if False:\n        raise rule("),
    Mutant("profiles", "a range names only its lower bound", VALIDATION,
           'low, high = spot.bound("ge"), spot.bound("le")', 'low, high = spot.bound("ge"), None'),
    Mutant("profiles", "more threads than cores pass", DEVICES,
           "        if self.threads > self.cores:", "        if self.threads > self.cores * 2:"),
    Mutant("profiles", "int4 passes outside weight-only", DEVICES,
           'if self.weight_type == "int4" and self.mode != "weight-only":', 'if False:'),
    Mutant("profiles", "a zero target is kept as a target", DEVICES,
           "        return None if value == 0 else value", "        return value"),
]


@dataclass
class Result:
    area: str
    name: str
    status: str  # killed, survived, stale
    by: str = ""  # the first failing test
    seconds: float = 0.0


@dataclass
class Report:
    baseline: dict[str, str] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def copy_repository(target: Path) -> None:
    """Tracked and new (not ignored) files of the working tree."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_tests(copy: Path, area: str, timeout: float) -> tuple[bool, str]:
    """(passed, first failing test) of an area's tests in the copy."""
    env = {**os.environ, "PYTHONPATH": str(copy), "EDGEFT_SEED": os.environ.get("EDGEFT_SEED", "1")}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *AREAS[area]]
    try:
        out = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"(timed out after {timeout:.0f} s)"
    failed = [line.split(" ", 2)[1] for line in out.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return out.returncode == 0, failed[0] if failed else (out.stdout.strip().splitlines() or ["?"])[-1]


def edits(mutant: Mutant) -> list[tuple[str, str]]:
    return [(mutant.old, mutant.new), *mutant.more]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(AREAS), default=list(AREAS))
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run (a hang counts as killed)")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if m.area in args.only]
    if args.list:
        for mutant in mutants:
            print(f"{mutant.area:<7} {mutant.path:<28} {mutant.name}")
        return 0
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeft-mutants-") as tmp:
        copy = Path(tmp)
        copy_repository(copy)
        for area in args.only:
            passed, detail = run_tests(copy, area, args.timeout)
            report.baseline[area] = "passed" if passed else f"FAILED: {detail}"
            log(f"baseline {area}: {report.baseline[area]}")
        for mutant in mutants:
            if report.baseline[mutant.area] != "passed":
                continue
            path = copy / mutant.path
            original = path.read_text(encoding="utf-8")
            text = original
            for old, new in edits(mutant):
                text = text.replace(old, new, 1) if text.count(old) == 1 else ""
            if not text:
                report.results.append(Result(mutant.area, mutant.name, "stale", "its text is not in the source"))
                log(f"STALE     {mutant.name}")
                continue
            path.write_text(text, encoding="utf-8")
            begun = time.perf_counter()
            try:
                passed, detail = run_tests(copy, mutant.area, args.timeout)
            finally:
                path.write_text(original, encoding="utf-8")
            result = Result(mutant.area, mutant.name, "survived" if passed else "killed", "" if passed else detail,
                            round(time.perf_counter() - begun, 1))
            report.results.append(result)
            log(f"{result.status.upper():<9} {mutant.name}  {result.by}  ({result.seconds:.0f} s)")
    counts = {status: sum(r.status == status for r in report.results) for status in ("killed", "survived", "stale")}
    lines = [f"edgeft mutation testing ({time.perf_counter() - started:.0f} s): {len(report.results)} mutants, "
             + ", ".join(f"{n} {status}" for status, n in counts.items()), ""]
    lines += [f"{r.status:<9} {r.area:<7} {r.name}" + (f"  <- {r.by}" if r.by else "") for r in report.results]
    bad = [area for area, state in report.baseline.items() if state != "passed"]
    lines += [f"baseline failed for {area}: {report.baseline[area]}" for area in bad]
    if args.json:
        log("\n".join(lines))
        print(json.dumps({"baseline": report.baseline, "results": [asdict(r) for r in report.results]}, indent=2))
    else:
        print("\n".join(lines))
    return 1 if bad or counts["survived"] or counts["stale"] else 0


if __name__ == "__main__":
    sys.exit(main())
