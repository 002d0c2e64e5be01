"""The fp32 inference model: trained weights written into a clean, folded forward graph.

The forward graph of the artifacts was exported for training: dropout is live in the trainable
part and nothing is constant-folded, so every Linear weight reaches its MatMul through a
Transpose and quantizers find no initializer weight to quantize. Here the trained values
replace the initializers, Dropout nodes become wires, and ONNX Runtime's hardware-independent
(basic) optimizations fold the constants; optionally the transformer fusions follow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgeft.errors import EdgeftError
from edgeft.ortcompat import quiet_python_logs, session_log_severity


def with_weights(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> list[str]:
    """Overwrite initializers by name; returns names that were given but not found."""
    found = set()
    for index, init in enumerate(model.graph.initializer):
        if init.name in values:
            current = numpy_helper.to_array(init)
            value = np.asarray(values[init.name], dtype=current.dtype).reshape(current.shape)
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, init.name))
            found.add(init.name)
    return sorted(set(values) - found)


def drop_dropout(model: onnx.ModelProto) -> int:
    """Replace every Dropout by a wire from its input to the consumers of its output."""
    graph = model.graph
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in graph.output:  # a graph output fed by a Dropout keeps its name via Identity
        if out.name in rename:
            kept.append(onnx.helper.make_node("Identity", [rename[out.name]], [out.name]))
    del graph.node[:]
    graph.node.extend(kept)
    return len(rename)


def fold_constants(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """ORT basic optimizations (constant folding, redundant-node removal), saved to ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    options.log_severity_level = session_log_severity()
    try:
        ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if "serializ" in str(exc).lower():  # the model loaded; writing its optimized copy failed (e.g. a full disk)
            raise EdgeftError(f"The optimized model could not be written: {exc}", where=str(path),
                              hint="free some space on that disk (or point TMPDIR to a disk with room) and run "
                                   "again.") from exc
        raise EdgeftError(f"ONNX Runtime could not load the inference model: {exc}", where="forward.onnx",
                          hint="re-export the artifacts with this edgeft version.") from exc
    return onnx.load(str(path))


def fuse_transformer(path: Path, out: Path, num_heads: int, hidden: int) -> list[str]:
    """LayerNorm / GELU / attention fusions of ORT's transformer optimizer; notes what was fused.

    The embedding lookups stay plain Gathers (no EmbedLayerNormalization): quantization then
    stores their tables int8 and dequantizes only the rows a run reads, where the fused op would
    need the whole fp32 table.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    with quiet_python_logs():  # e.g. a line of "Failed to remove node" per attention block of a DistilBERT
        optimized = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden,
                                   optimization_options=options, opt_level=0, use_gpu=False)
        counts = optimized.get_fused_operator_statistics()
        optimized.save_model_to_file(str(out))
    return [f"{op} x{count}" for op, count in sorted(counts.items()) if count]


def build_inference_model(forward_path: Path, trained: dict[str, np.ndarray], out: Path,
                          fuse: bool, heads: int | None, hidden: int | None) -> tuple[Path, list[str]]:
    """Write the fp32 inference model to ``out``; returns it with notes on what was done."""
    model = onnx.load(str(forward_path))
    missing = with_weights(model, trained)
    if missing:
        raise EdgeftError(f"The checkpoint holds parameters the model does not have: {missing[:3]}.",
                          where=str(forward_path), hint="deploy a run trained from these artifacts.")
    dropped = drop_dropout(model)
    notes = [f"wrote {len(trained)} trained tensors", f"removed {dropped} Dropout node(s)"]
    with tempfile.TemporaryDirectory() as tmp:
        folded_path = Path(tmp) / "folded.onnx"
        folded = fold_constants(model, folded_path)
        notes.append(f"constant folding: {len(model.graph.node)} -> {len(folded.graph.node)} nodes")
        if fuse:
            try:  # 0 heads / hidden size: the fuser reads them from the graph's reshapes
                fused = fuse_transformer(folded_path, out, heads or 0, hidden or 0)
                notes.append("transformer fusions: " + (", ".join(fused) or "none matched")
                             + ("" if heads and hidden else " (head count and width read from the graph)"))
                return out, notes
            except Exception as exc:  # the fuser is best effort; the folded model is still valid
                notes.append(f"transformer fusions skipped ({type(exc).__name__}: {exc})")
        onnx.save(folded, str(out))
    return out, notes
