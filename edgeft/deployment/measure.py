"""Latency measured the same way for deploy reports and ``edgeft bench``, and the sample inputs it runs on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def latency(session: Any, feed: dict[str, np.ndarray], warmup: int = 5, iterations: int = 50,
            max_seconds: float = 20.0) -> dict[str, float]:
    """p50 / p95 / p99 / mean latency in ms and throughput in examples per second, after warm-up."""
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    deadline = time.perf_counter() + max_seconds
    for _ in range(iterations):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline and len(times) >= 5:
            break
    ms = np.array(times) * 1000
    batch = next(iter(feed.values())).shape[0]
    return {"batch": int(batch), "runs": len(times), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "throughput_per_s": float(batch * 1000 / ms.mean())}


def sample_feed(manifest_data: dict[str, Any], folder: Path, batch: int, sequence: int, texts: list[str] | None = None,
                seed: int = 0) -> dict[str, np.ndarray]:
    """A realistic input of ``batch`` examples: text tokens filling ``sequence`` positions, or images."""
    rng = np.random.default_rng(seed)
    if manifest_data["modality"] == "text":
        from edgeft.data.encode import TextEncoder

        encoder = TextEncoder(Path(folder), manifest_data)
        words = " ".join(texts or ["please turn the kitchen lights off and play some quiet music"] * 4)
        ids = encoder.encode([" ".join([words] * 8)])[0][:sequence]
        pad = int(manifest_data["preprocessing"].get("pad_token_id", 0))
        row = np.concatenate([ids, np.full(max(0, sequence - len(ids)), pad, dtype=np.int64)])
        return {"input_ids": np.tile(row, (batch, 1)).astype(np.int64),
                "attention_mask": np.tile((np.arange(sequence) < len(ids)).astype(np.int64), (batch, 1))}
    feed = {}
    for spec in manifest_data["inputs"]:
        shape = [batch if d == "batch" else (d if isinstance(d, int) else sequence) for d in spec["shape"]]
        dtype = np.dtype(spec["dtype"])
        feed[spec["name"]] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.ones(shape, dtype)
    return feed
