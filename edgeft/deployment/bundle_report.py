"""The readable ``REPORT.md`` of a bundle, from the report deploy writes as ``report.json``."""

from __future__ import annotations

from typing import Any


def _target_lines(report: dict[str, Any]) -> list[str]:
    targets = report.get("targets")
    if not targets:
        return []
    size = (f"- size: {targets['size_mb']:.1f} MB, within the profile's {targets['max_model_mb']:g} MB"
            if targets["max_model_mb"] is not None else f"- size: {targets['size_mb']:.1f} MB (the profile sets no budget)")
    if targets["latency_ms_p50"] is None:
        latency = "- latency: the profile sets no target"
    else:
        latency = (f"- latency p50: {targets['measured_p50_ms']:.2f} ms measured on the deploying machine against the "
                   f"profile's target of {targets['latency_ms_p50']:g} ms on the device; measured on a host, not "
                   f"the device, so it is reported, not enforced")
    return ["## Profile targets", "", size, latency, ""]


def _checked_on(report: dict[str, Any]) -> str:
    text = f"{report['validation_examples']} validation examples"
    if report.get("guard_training_examples"):
        text += (f" and {report['guard_training_examples']} training examples (enough for one changed prediction "
                 f"to be a fifth of the tolerance); the accuracies below are on validation alone")
    return text


def render_report(report: dict[str, Any]) -> str:
    """The readable REPORT.md of a bundle."""
    fp32, model = report["fp32"], report["bundle_model"]
    metric = next(m for m in ("accuracy", "recall@1", "rmse") if m in fp32["metrics"])
    lines = [
        f"# edgeft bundle for {report['device']}", "",
        f"Chosen recipe: **{report['chosen']}** (drop {report['accuracy_drop']:.2f} within the allowed "
        f"{report['max_accuracy_drop']:.2f}), checked on {_checked_on(report)}.", "",
        "| | fp32 | bundle |", "|---|---|---|",
        f"| size | {fp32['size_mb']:.1f} MB | {model['size_mb']:.1f} MB ({100 * report['size_ratio']:.0f}%) |",
        f"| {metric} | {fp32['metrics'][metric]:.4f} | {model['metrics'][metric]:.4f} |",
        f"| latency p50, batch 1, {report['threads']} thread(s) | {fp32['latency']['p50_ms']:.2f} ms | "
        f"{model['latency']['p50_ms']:.2f} ms ({report['speedup_batch1']:.2f}x) |",
        f"| latency p95 | {fp32['latency']['p95_ms']:.2f} ms | {model['latency']['p95_ms']:.2f} ms |", "",
    ]
    if report.get("profile_threads") and report["profile_threads"] != report["threads"]:
        lines += [f"Latency measured on the deploying machine, with {report['threads']} thread(s) because it has "
                  f"no more cores; the device runs the bundle with {report['profile_threads']}.", ""]
    lines += _target_lines(report)
    lines += ["## Recipes tried", ""]
    for attempt in report["attempts"]:
        verdict = "accepted" if attempt["accepted"] else \
            "rejected: over the size budget" if not attempt.get("within_size", True) else "rejected"
        lines.append(f"- {attempt['step']}: drop {attempt['drop']:.2f}, {attempt['size_mb']:.1f} MB, "
                     f"{verdict} ({'; '.join(attempt['notes'])})")
    lines += ["", "## Inference model", "", *[f"- {note}" for note in report["build_notes"]], ""]
    return "\n".join(lines)
