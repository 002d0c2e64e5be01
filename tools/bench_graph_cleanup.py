#!/usr/bin/env python
"""The portable training step's graph clean-up: edgeft's own passes against maintained graph
libraries (onnxslim; onnxscript's optimizer, built on onnx-ir), in one run.

For each model, the full-graph training step that onnx-ad writes (``feeds=None``: onnx-ad's
output with edgeft's identity skipping and pruning only) is cleaned up four ways:

- ``edgeft``: edgeft's simplification from observed shapes (edgeft.exporting.simplify), as export does;
- ``onnxslim``: ``onnxslim.slim`` on the raw step;
- ``onnxscript``: ``onnxscript.optimizer.optimize`` (constant folding, dead code, identity and
  broadcast eliminations of onnx-ir's passes) on the raw step;
- ``edgeft+onnxslim``: onnxslim after edgeft's passes.

Prints per variant: node count, training steps per second in ONNX Runtime with the portable
backend's session options, the ratio to edgeft's, and whether loss and gradients equal the raw
step's. Needs the host side and the two libraries (``pip install onnxslim onnxscript``), which
edgeft itself does not depend on.

Usage: python tools/bench_graph_cleanup.py [--model minilm|tiny] [--steps 30] [--batch 16] [--length 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402


def _export(model: str, folder: Path) -> Path:
    import edgeft

    source = None if model == "minilm" else str(_tiny(folder))
    return Path(edgeft.export(source, labels=["a", "b", "c"], train="last:1", dropout=False,
                              output=folder / "art"))


def _tiny(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tools"))
    from tiny_text_model import build  # noqa: PLC0415

    return build(folder / "tiny", ["turn on the lights", "play some music"])


def _session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    from edgeft.backends.portable import STEP_KEEPS, step_session_options

    return ort.InferenceSession(model.SerializeToString(), step_session_options(threads),
                                providers=["CPUExecutionProvider"], disabled_optimizers=STEP_KEEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import onnxscript.optimizer
    import onnxslim

    from edgeft.exporting.portable import build_step
    from edgeft.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        folder = _export(args.model, Path(tmp))
        manifest = load_manifest(folder)
        forward = onnx.load(str(manifest.path("forward_model")))
        trainable = [t["name"] for t in manifest.data["trainable"]["tensors"]]
        output, width = manifest.data["output"]["name"], manifest.data["output"]["shape"][-1]
        loss = manifest.data["loss"]
        names = [i["name"] for i in manifest.inputs]

        def feeds(size: dict[str, int]) -> dict[str, np.ndarray]:
            batch, length = size["batch"], size["*"]
            rng = np.random.default_rng(batch * 100 + length)
            return {n: (rng.integers(5, 80, (batch, length)) if n == "input_ids" else
                        np.ones((batch, length))).astype(np.int64) for n in names}

        raw, values = build_step(forward, trainable, loss, output, width, forward.ir_version)
        feed = {**feeds({"batch": args.batch, "*": args.length}), **values,
                "labels": np.random.default_rng(0).integers(0, width, args.batch).astype(np.int64)}
        feed = {k: v for k, v in feed.items() if k in {i.name for i in raw.graph.input}}
        ours, _ = build_step(forward, trainable, loss, output, width, forward.ir_version, feeds=feeds)
        variants = {"raw (onnx-ad)": raw, "edgeft": ours}
        variants["onnxslim"] = onnxslim.slim(onnx.ModelProto.FromString(raw.SerializeToString()))
        variants["onnxscript"] = onnxscript.optimizer.optimize(onnx.ModelProto.FromString(raw.SerializeToString()))
        variants["edgeft+onnxslim"] = onnxslim.slim(onnx.ModelProto.FromString(ours.SerializeToString()))
        reference = _session(raw, args.threads).run(None, feed)
        rates = {}
        for name, model in variants.items():
            session = _session(model, args.threads)
            got = session.run(None, feed)
            order = [o.name for o in session.get_outputs()]
            expected = dict(zip([o.name for o in raw.graph.output], reference))
            same = all(np.allclose(got[i], expected[n], rtol=1e-4, atol=1e-6) for i, n in enumerate(order) if n in expected)
            for _ in range(3):
                session.run(None, feed)
            start = time.perf_counter()
            for _ in range(args.steps):
                session.run(None, feed)
            rates[name] = (args.steps / (time.perf_counter() - start), len(model.graph.node), same)
        print(f"{args.model}, batch {args.batch}, length {args.length}, {args.threads} threads, {args.steps} steps")
        for name, (rate, nodes, same) in rates.items():
            print(f"{name:16s} nodes {nodes:5d}  steps/s {rate:7.2f}  x{rate / rates['edgeft'][0]:.2f} of edgeft's"
                  f"  same outputs: {same}")


if __name__ == "__main__":
    main()
