#!/usr/bin/env python
"""How close a tail training step comes to what this CPU can do, measured in one run.

1. A GEMM reference: an fp32 MatMul in a plain ONNX Runtime session (the same MLAS kernels the
   training step uses) at the same thread count, for the shapes of the tail's largest products;
   the best GFLOP/s is the reference.
2. The FLOP count of one training step of the tail: every MatMul / Gemm of the tail's forward
   graph at the benchmark's batch and sequence, times 3 (the forward product, the gradient with
   respect to its input, the gradient with respect to its weight).
3. The step itself (train step + optimizer step on cached boundary activations) timed with the
   portable backend (``--backend`` to choose): achieved GFLOP/s and its fraction of the reference
   (target: at least 65%).

Usage: python tools/bench_kernels.py [ARTIFACTS] [--batch 32] [--sequence 16] [--threads 2]
       [--backend portable|ort-training] [--json]

ARTIFACTS is an export (or device package) with a frozen-prefix cache (default artifacts/bench/minilm-last1, made by
tools/bench_train.py or `edgeft export --train last:1 -o artifacts/bench/minilm-last1`).
Sequence 16 is BANKING77's median tokenized length.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_flops(model_path: Path, sizes: dict[str, int]) -> tuple[float, list[tuple[int, int, int, int]]]:
    """FLOPs of every MatMul / Gemm in a graph at concrete dimension sizes, and their (batch, M, K, N)."""
    import onnx

    model = onnx.load(str(model_path))
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in sizes:
                dim.dim_value = sizes[dim.dim_param]
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if dims and all(dims):
            shapes[value.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total, products = 0.0, []
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] not in shapes or node.input[1] not in shapes:
            continue
        a, b = shapes[node.input[0]], shapes[node.input[1]]
        if node.op_type == "Gemm":
            transposed_b = any(attr.name == "transB" and attr.i for attr in node.attribute)
            m, k, n = a[0], a[1], (b[0] if transposed_b else b[1])
            batch = 1
        else:
            m, k, n = a[-2] if len(a) > 1 else 1, a[-1], b[-1]
            batch = int(np.prod(a[:-2])) if len(a) > 2 else 1
        products.append((batch, m, k, n))
        total += 2.0 * batch * m * k * n
    return total, products


def gemm_gflops(m: int, k: int, n: int, threads: int, seconds: float = 1.5, constant: bool = False,
                int8: bool = False) -> float:
    """GFLOP/s of an [m, k] x [k, n] product in ONNX Runtime at ``threads`` threads.

    By default a MatMul of two inputs, as in a training step, whose weights change every step.
    ``constant``: the weights are an initializer, as in an inference model (ORT pre-packs them).
    ``int8``: that constant is turned by onnxruntime's dynamic quantizer into an int8
    DynamicQuantizeMatMul, exactly as in a deployed int8 bundle; comparing the two at a bundle's
    shapes shows how much faster int8 kernels can be on this CPU at all.
    """
    constant = constant or int8
    import logging
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeft.deployment.runtime import make_session

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((k, n), dtype=np.float32)
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])]
    if not constant:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n]))
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", inputs,
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(weights, "b")] if constant else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory(prefix="edgeft-gemm-") as tmp:
        path = Path(tmp) / "gemm.onnx"
        onnx.save(model, str(path))
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.disable(logging.WARNING)  # the quantizer's pre-processing advice
            quantize_dynamic(str(path), str(Path(tmp) / "int8.onnx"), weight_type=QuantType.QInt8)
            logging.disable(logging.NOTSET)
            path = Path(tmp) / "int8.onnx"
        session = make_session(path, threads, "all")
    feed = {"a": rng.standard_normal((m, k), dtype=np.float32)}
    if not constant:
        feed["b"] = weights
    for _ in range(3):
        session.run(None, feed)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, feed)
        runs += 1
    return 2.0 * m * k * n * runs / (time.perf_counter() - start) / 1e9


def step_seconds(artifacts: Path, batch: int, sequence: int, threads: int, backend: str = "portable",
                 steps: int = 30) -> float:
    """Mean wall time of one tail train step + optimizer step on random boundary activations."""
    from edgeft.backends.select import open_trainer
    from edgeft.manifest import TAIL_PREFIX, load_manifest

    manifest = load_manifest(artifacts)
    cache = manifest.data["cache"]
    rng = np.random.default_rng(0)
    feed: dict[str, np.ndarray] = {}
    for spec in cache["boundary"]:
        shape = [batch if d == "batch" else sequence if d == "sequence" else d for d in spec["shape"]]
        feed[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
    for name in cache["raw_inputs"]:
        feed[name] = np.ones((batch, sequence), dtype=np.int64)
    feed["labels"] = rng.integers(0, len(manifest.data["labels"]["names"]), batch).astype(np.int64)
    trainer = open_trainer(manifest, backend, threads=threads, prefix=TAIL_PREFIX)
    for _ in range(3):
        trainer.train_step(feed)
        trainer.optimizer_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(feed)
        trainer.optimizer_step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path, nargs="?", default=ROOT / "artifacts" / "bench" / "minilm-last1")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sequence", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="portable", choices=["portable", "ort-training"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from edgeft.manifest import TAIL_PREFIX, load_manifest

    manifest = load_manifest(args.artifacts)
    if not manifest.data.get("cache", {}).get("available"):
        sys.exit(f"{args.artifacts} has no frozen-prefix tail; export with --train last:N")
    forward_flops, products = matmul_flops(manifest.path(f"{TAIL_PREFIX}portable_eval"),
                                           {"batch": args.batch, "sequence": args.sequence})
    step_flops = 3 * forward_flops
    largest = sorted({(b * m, k, n) for b, m, k, n in products}, key=lambda s: -s[0] * s[1] * s[2])[:3]
    reference = {f"{m}x{k}x{n}": round(gemm_gflops(m, k, n, args.threads), 1) for m, k, n in largest}
    best = max(reference.values())
    seconds = step_seconds(args.artifacts, args.batch, args.sequence, args.threads, args.backend)
    achieved = step_flops / seconds / 1e9
    result = {"artifacts": str(args.artifacts), "batch": args.batch, "sequence": args.sequence, "threads": args.threads,
              "tail_matmuls": len(products), "step_gflop": round(step_flops / 1e9, 3),
              "step_ms": round(seconds * 1000, 2), "achieved_gflops": round(achieved, 1),
              "gemm_reference_gflops": reference, "efficiency": round(achieved / best, 3),
              "backend": args.backend, "target_met": achieved / best >= 0.65}
    if args.json:
        print(json.dumps(result))
        return
    print(f"tail of {args.artifacts.name}: {len(products)} MatMul/Gemm, batch {args.batch}, sequence {args.sequence}, "
          f"{args.threads} threads")
    print("GEMM reference (ORT MatMul, GFLOP/s): " + ", ".join(f"{k} {v}" for k, v in reference.items()))
    print(f"one training step: {result['step_gflop']} GFLOP in {result['step_ms']} ms = {result['achieved_gflops']} "
          f"GFLOP/s, {100 * result['efficiency']:.0f}% of the reference (target >= 65%: "
          f"{'met' if result['target_met'] else 'MISSED'})")


if __name__ == "__main__":
    main()
