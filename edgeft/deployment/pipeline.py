"""``edgeft deploy``: trained run -> fp32 inference model -> quantized bundle, checked and measured."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeft import __version__
from edgeft.data.records import read_records
from edgeft.deployment.bundle_report import render_report
from edgeft.deployment.guard import examples_needed, head_node_patterns, ladder, pooled, quality_drop
from edgeft.deployment.inference_model import build_inference_model
from edgeft.deployment.measure import latency, sample_feed
from edgeft.deployment.quantize import quantize
from edgeft.deployment.runtime import InferenceStepper, make_session, session_config
from edgeft.devices import DeviceProfile, load_profile
from edgeft.errors import EdgeftError
from edgeft.fsutil import staged_folder
from edgeft.machine import auto_device
from edgeft.manifest import PREPROCESSING_FILES, Manifest, write_manifest
from edgeft.ortcompat import runtime_versions, usable_threads
from edgeft.outputs import check_output, output_check
from edgeft.reporter import Reporter
from edgeft.run.record import RUN_FILE, RunRecord
from edgeft.data.cache import CachedExamples
from edgeft.data.examples import DataOptions, ExampleSet, load_examples
from edgeft.evaluation import metrics
from edgeft.evaluation.evaluate import Examples, checkpoint_parameters, evaluate, resolve_model

REPORT_JSON = "report.json"
REPORT_MD = "REPORT.md"


@dataclass
class DeployOptions:
    """What ``edgeft deploy`` is told."""

    source: Path
    device: str = "auto"
    output: Path | None = None
    val: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    max_drop: float | None = None
    sequence: int = 64
    force: bool = False
    checkpoint: Path | None = None  # a run checkpoint to deploy instead of the run's best (as evaluate's)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more manifest fields, e.g. a build key


def _run_record(source: Path) -> RunRecord | None:
    return RunRecord.read(source) if (source / RUN_FILE).is_file() else None


def _validation(manifest: Manifest, options: DeployOptions, run: RunRecord | None) -> tuple[ExampleSet, ExampleSet | None]:
    """Validation examples (--val, or the run's), and training examples for calibration."""
    recorded = run.data if run is not None else {}
    columns = dict(text_column=recorded.get("text_column", options.text_column),
                   label_column=recorded.get("label_column", options.label_column))
    train_file = run.data_file("train") if run is not None else None
    if options.val is not None:
        val = ExampleSet(read_records(options.val, manifest.data, **columns), manifest)
        train = None
        if train_file is not None:
            train, _ = load_examples(manifest, DataOptions(train=train_file, **columns), 0, 0, Reporter())
        return val, train
    if run is None:
        raise EdgeftError("deploy needs labelled validation data to check the quantized model's accuracy.",
                          where=str(options.source), hint="pass --val FILE (or deploy a run folder from edgeft train).")
    for key, found in (("train", train_file), ("val", run.data_file("val"))):
        if found is None and run.recorded(key):
            raise EdgeftError(f"The run's {'training' if key == 'train' else 'validation'} data is not where it was, "
                              f"or was changed since training ({run.recorded(key)}).", where=str(run.run_dir),
                              hint="pass --val FILE with labelled validation data for the accuracy check.")
    if train_file is None:  # a federated run: its training data stayed on the devices
        val_file = run.data_file("val")
        if val_file is None:
            raise EdgeftError("The run has no validation data to check the quantized model with.",
                              where=str(options.source), hint="pass --val FILE.")
        return ExampleSet(read_records(val_file, manifest.data, **columns), manifest), None
    config = dict(recorded.get("config", {}))
    data = DataOptions(train=train_file, val=run.data_file("val"), **columns)
    train, val = load_examples(manifest, data, config.get("val_fraction", 0.1), config.get("seed", 0), Reporter())
    if val is None:
        raise EdgeftError("The run has no validation data to check the quantized model with.", where=str(options.source),
                          hint="pass --val FILE.")
    return val, train


def _guard_top_up(train: ExampleSet | None, val: ExampleSet, needed: int) -> ExampleSet | None:
    """Training examples added to the guard's check when validation alone cannot resolve the tolerance."""
    if train is None or len(val) >= needed:
        return None
    rng = np.random.default_rng(0)
    if train.manifest.data["task"] == "embedding":  # whole groups: an example counts only beside its group's others
        labels = train.labels(np.arange(len(train)))
        picked: list[int] = []
        for group in rng.permutation(np.unique(labels)):
            if len(picked) >= needed - len(val):
                break
            picked += np.flatnonzero(labels == group).tolist()
        order = np.sort(np.array(picked, dtype=np.int64))
    else:
        order = np.sort(rng.permutation(len(train))[: needed - len(val)])
    return ExampleSet(train.records.subset(order), train.manifest)


def _calibration(train: ExampleSet | None, count: int, wrap: Callable[[ExampleSet], Examples]) -> list[dict[str, np.ndarray]]:
    """Input batches for static quantization: a seeded sample of the training examples, as ``wrap``
    makes them model inputs (a package's tail reads its prefix's outputs)."""
    if train is None:
        return []
    order = np.random.default_rng(0).permutation(len(train))[:count]
    sample = wrap(ExampleSet(train.records.subset(order), train.manifest))
    return [sample.inputs(np.arange(i, min(i + 8, len(order)))) for i in range(0, len(order), 8)]


def _size_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


class _WholeModel:
    """Artifacts: the trained weights in the whole forward graph, quantized whole."""

    def __init__(self, manifest: Manifest, trained: dict[str, np.ndarray], profile: DeviceProfile, work: Path) -> None:
        source = manifest.data.get("source", {})
        self.fp32, self.notes = build_inference_model(
            manifest.path("forward_model"), trained, work / "fp32.onnx",
            fuse=profile.runtime.fuse_transformer and manifest.data["modality"] == "text",
            heads=source.get("num_attention_heads"), hidden=source.get("hidden_size"))
        self.reference = self.fp32  # what the bundle is compared with (size, latency)
        self.base_config: dict[str, str] = {}

    def bundle_mb(self, candidate: Path) -> float:
        return _size_mb(candidate)

    def examples(self, examples: ExampleSet) -> Examples:
        return examples

    def bundle_model(self, candidate: Path, out: Path) -> None:
        shutil.move(str(candidate), out)

    def close(self) -> None:
        pass


class _PackageTail:
    """A device package: its prefix as shipped, the trained tail quantized alone and joined behind it.

    The guard evaluates tail candidates on the prefix's outputs, computed once per example (the
    training run evaluated the same way), so each recipe costs a pass of the tail only."""

    def __init__(self, manifest: Manifest, trained: dict[str, np.ndarray], profile: DeviceProfile, work: Path,
                 threads: int | None) -> None:
        from edgeft.deployment.inference_model import fold_constants
        from edgeft.deployment.tail_model import join_prefix_and_tail, tail_inference_model

        self.manifest, self.threads, self._join = manifest, threads, join_prefix_and_tail
        cache = manifest.data["cache"]
        inputs = [b["name"] for b in cache["boundary"]] + list(cache["raw_inputs"])
        tail = tail_inference_model(manifest.path("tail_portable_eval"), trained, inputs,
                                    manifest.data["output"]["name"], work / "tail.onnx")
        folded = fold_constants(tail, work / "tail-fp32.onnx")
        self.fp32 = work / "tail-fp32.onnx"
        self.notes = [f"wrote {len(trained)} trained tensors into the tail",
                      f"tail constant folding: {len(tail.graph.node)} -> {len(folded.graph.node)} nodes",
                      f"frozen prefix from the package: {manifest.data['prefix']['chosen']} "
                      f"({manifest.data['prefix']['recipe_summary']})"]
        self.prefix = manifest.path("prefix_model")
        self.reference = work / "reference.onnx"  # package prefix + fp32 tail: what the run evaluated
        self._join(self.prefix, self.fp32, self.reference)
        self.base_config = dict(manifest.data["prefix"].get("session_config") or {})
        self._cached: list[Any] = []

    def examples(self, examples: ExampleSet) -> Examples:

        cached = CachedExamples(examples, self.manifest, self.threads, budget_bytes=1 << 40)
        self._cached.append(cached)
        return cached

    def bundle_mb(self, candidate: Path) -> float:
        return _size_mb(self.prefix) + _size_mb(candidate)  # the joined model holds both

    def bundle_model(self, candidate: Path, out: Path) -> None:
        self._join(self.prefix, candidate, out)

    def close(self) -> None:
        for cached in self._cached:
            cached.close()


def deploy(options: DeployOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build, check, measure and write a bundle; returns the report."""
    step = progress or (lambda _text: None)
    started = time.perf_counter()
    manifest, checkpoint = resolve_model(Path(options.source), options.checkpoint)
    package = manifest.kind == "package"
    device = options.device
    if package:
        device = _package_device(manifest, device)
    profile: DeviceProfile = load_profile(auto_device() if device == "auto" else device)
    run = _run_record(Path(options.source))
    trained = checkpoint_parameters(checkpoint) if checkpoint else {}
    if package and not trained:
        trained = checkpoint_parameters(manifest.path("portable_checkpoint"))  # an untrained package deploys as exported
    name = f"{manifest.data['name']}-{profile.name}"
    dest = Path(options.output) if options.output else Path("artifacts") / "bundles" / name
    check_output(dest, options.force, "bundle")  # fail before the slow part
    step("reading validation data")
    val, train = _validation(manifest, options, run)
    if manifest.data["task"] == "embedding":  # the guard's own measure must have something to find
        metrics.require_queries(val.labels(np.arange(len(val))), "validation text", "validation data")
    task, max_drop = manifest.data["task"], profile.targets.max_accuracy_drop if options.max_drop is None else options.max_drop
    threads, level = profile.hardware.threads, profile.runtime.graph_optimization
    measured_threads = usable_threads(threads)
    with staged_folder(dest, force=options.force, check=output_check("bundle")) as stage:
        work = stage / ".work"
        work.mkdir()
        step("building the fp32 inference model" + (" of the tail" if package else ""))
        model = _PackageTail(manifest, trained, profile, work, threads) if package else \
            _WholeModel(manifest, trained, profile, work)
        try:
            extra_set = _guard_top_up(train, val, examples_needed(task, max_drop))
            step("evaluating the fp32 model" + (" (running the package's prefix once over the examples)" if package else ""))
            guard_sets = [model.examples(val)] + ([model.examples(extra_set)] if extra_set is not None else [])
            sizes = [len(val)] + ([len(extra_set)] if extra_set is not None else [])

            def check(candidate: Path, config: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
                """Validation metrics, and the metrics the guard judges (validation plus any top-up)."""
                stepper = InferenceStepper(make_session(candidate, threads, level, config), manifest)
                results = [evaluate(stepper, examples, task, len(manifest.data["labels"]["names"]), 32)
                           for examples in guard_sets]
                return results[0], pooled(task, [(m, n) for m, n in zip(results, sizes)])

            fp32_metrics, fp32_guard = check(model.fp32)
            # without training data (a federated run, or artifacts and --val) static ranges come from validation
            calibration = _calibration(train if train is not None else val, profile.quantization.calibration_examples,
                                       model.examples) \
                if profile.quantization.mode == "static" else []
            attempts, chosen = [], None
            budget = profile.targets.max_model_mb
            for why, recipe in ladder(profile.quantization, head_node_patterns(
                    [t["name"] for t in manifest.data["trainable"]["tensors"]])):
                step(f"quantizing{' the tail' if package else ''}: {why}")
                candidate = work / f"candidate-{len(attempts)}.onnx"
                notes = quantize(model.fp32, candidate, recipe, calibration)
                quant_metrics, quant_guard = check(candidate, session_config(recipe.mode))
                drop = quality_drop(task, fp32_guard, quant_guard)
                size = model.bundle_mb(candidate)
                fits = budget is None or size <= budget  # over the profile's size: fall back as for accuracy
                accepted = drop <= max_drop + 1e-9 and fits
                attempts.append({"step": why, "recipe": recipe.model_dump(), "notes": notes,
                                 "metrics": _public(quant_metrics), "drop": round(drop, 4), "size_mb": round(size, 3),
                                 "within_size": fits, "accepted": accepted})
                if accepted:
                    chosen = candidate, recipe
                    break
        finally:
            model.close()
        if chosen is None:  # the ladder ends with fp32, whose drop is 0: only the size budget refuses every recipe
            raise _over_budget(profile, attempts, max_drop)
        model_path = stage / "model.onnx"
        model.bundle_model(chosen[0], model_path)
        config = {**model.base_config, **session_config(chosen[1].mode)}
        step("measuring latency")
        feed = sample_feed(manifest.data, manifest.folder, 1, options.sequence)
        speed_fp32 = latency(make_session(model.reference, threads, level, model.base_config), feed)
        speed_bundle = latency(make_session(model_path, threads, level, config), feed)
        files = {"model": "model.onnx", "labels": "labels.txt", "profile": "profile.toml"}
        shutil.copyfile(manifest.path("labels"), stage / "labels.txt")
        shutil.copyfile(profile.path, stage / "profile.toml")
        for key in PREPROCESSING_FILES:
            if key in manifest.data["files"]:
                target = manifest.data["files"][key]["path"]
                shutil.copyfile(manifest.path(key), stage / target)
                files[key] = target
        report = {
            "bundle": str(dest), "device": profile.name, "threads": measured_threads, "profile_threads": threads, "source": str(options.source),
            "checkpoint": str(checkpoint) if checkpoint else None, "validation_examples": len(val),
            "guard_training_examples": len(extra_set) if extra_set is not None else 0,
            "reference": "the package's prefix with the fp32 tail (what the run trained and evaluated)" if package
            else "the fp32 model",
            "fp32": {"size_mb": round(_size_mb(model.reference), 3), "metrics": _public(fp32_metrics), "latency": speed_fp32},
            "bundle_model": {"size_mb": round(_size_mb(model_path), 3), "metrics": attempts[-1]["metrics"],
                             "latency": speed_bundle},
            "size_ratio": round(_size_mb(model_path) / _size_mb(model.reference), 4),
            "speedup_batch1": round(speed_fp32["p50_ms"] / speed_bundle["p50_ms"], 3),
            "accuracy_drop": attempts[-1]["drop"], "max_accuracy_drop": max_drop,
            "chosen": attempts[-1]["step"], "attempts": attempts, "build_notes": model.notes,
            "latency_target_ms": profile.targets.latency_ms_p50,
            "targets": _targets(profile, _size_mb(model_path), speed_bundle["p50_ms"]),
            "sequence": options.sequence if manifest.data["modality"] == "text" else None,
        }
        if package:
            report["package"] = {"name": manifest.data["name"], "prefix": manifest.data["prefix"]["chosen"],
                                 "prefix_recipe": manifest.data["prefix"]["recipe_summary"]}
        shutil.rmtree(work)
        report["seconds"] = round(time.perf_counter() - started, 2)
        (stage / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (stage / REPORT_MD).write_text(render_report(report), encoding="utf-8")
        files.update({"report": REPORT_JSON, "report_text": REPORT_MD})
        data = {key: manifest.data[key] for key in ("task", "modality", "loss", "inputs", "output", "preprocessing")}
        data.update({"kind": "bundle", "name": name, "labels": {"names": manifest.data["labels"]["names"]},
                     "device": profile.name, "threads": threads, "graph_optimization": level, "session_config": config,
                     "quantization": chosen[1].model_dump(), "artifacts": manifest.data["name"],
                     **({"prefix_quantization": manifest.data["prefix"]["recipe"]} if package else {}),
                     "tool": {"edgeft": __version__, **runtime_versions()}, **options.extra})
        write_manifest(stage, data, files)
    return report


def _package_device(manifest: Manifest, device: str | None) -> str:
    """A package deploys for the profile its prefix was prepared for (the profile file it carries)."""
    own = manifest.data["device"]["name"]
    if device not in (None, "auto", own) and Path(str(device)).stem != own:
        raise EdgeftError(f"This run trained a device package for {own}; its frozen prefix was prepared for that "
                          f"profile, not for {device}.", where="--device",
                          hint=f"leave out --device (or pass {own}), or export a package for {device} and train on it.")
    return str(manifest.path("profile"))


def _over_budget(profile: DeviceProfile, attempts: list[dict[str, Any]], max_drop: float) -> EdgeftError:
    """No recipe both accurate and within the profile's max_model_mb; nothing is written."""
    accurate = [a for a in attempts if a["drop"] <= max_drop + 1e-9]
    smallest = min(accurate or attempts, key=lambda a: a["size_mb"])
    return EdgeftError(
        f"No recipe gives a model within the profile's size budget: the smallest accurate one ({smallest['step']}) "
        f"is {smallest['size_mb']:.1f} MB, over max_model_mb = {profile.targets.max_model_mb:g} of {profile.name}.",
        where=f"{profile.path}, targets.max_model_mb",
        hint="deploy for a profile with a larger budget (or raise max_model_mb in your own profile), or deploy a "
             "smaller model; no bundle was written.")


def _targets(profile: DeviceProfile, size_mb: float, p50_ms: float) -> dict[str, Any]:
    """The bundle against the profile's targets: the size is checked (deploy refuses a model over
    budget); the latency was measured on this machine, not on the device, so it is only reported."""
    target = profile.targets
    return {"max_model_mb": target.max_model_mb, "size_mb": round(size_mb, 3),
            "within_size": target.max_model_mb is None or size_mb <= target.max_model_mb,
            "latency_ms_p50": target.latency_ms_p50, "measured_p50_ms": p50_ms, "latency_measured_on": "host",
            "latency_enforced": False}


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in values.items()
            if k != "confusion"}
