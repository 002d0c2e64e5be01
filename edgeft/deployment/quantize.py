"""Quantize an fp32 inference model with a device profile's recipe.

Recipes: ``dynamic`` (int8 weights, activations quantized at run time), ``static`` (int8
weights and activations, calibrated on a sample of the training data; QDQ or QOperator),
``weight-only`` (weights stored as int8 or int4 and dequantized when the model loads: smaller
files, fp32 compute), ``fp16`` and ``none``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeft.errors import EdgeftError
from edgeft.ortcompat import quiet_python_logs

# Lookup-table operators. Their tables are stored int8 per row by ``weight_only`` rather than
# by onnxruntime's quantizers, whose one scale for a whole 30k-row table costs accuracy.
TABLE_OPS = {"Gather"}


def excluded_nodes(model: onnx.ModelProto, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the nodes matching any pattern (kept in fp32)."""
    compiled = [re.compile(p) for p in patterns]
    return [n.name for n in model.graph.node if n.name and any(p.search(n.name) for p in compiled)]


def _op_types(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    present = {n.op_type for n in model.graph.node}
    wanted = (set(op_types) or {"MatMul", "Gemm", "Attention", "Conv"}) - TABLE_OPS
    return sorted(wanted & present)


class _Calibration:
    """onnxruntime's CalibrationDataReader over a list of input feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - required by newer onnxruntime versions
        pass


def _table_use(node: onnx.NodeProto, index: int) -> bool:
    """Whether input ``index`` of ``node`` is an embedding table read row by row."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.op_type == "Gather" and index == 0 and axis == 0


def _matrix_use(node: onnx.NodeProto, index: int) -> bool:
    """Whether input ``index`` of ``node`` is a matrix operand of a product (fused attention: its QKV weights)."""
    return node.op_type in ("MatMul", "Gemm") or (node.op_type == "Attention" and index == 1)


def _per_channel_int8(weight: np.ndarray, axis: int, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 values and one fp32 scale per row (``axis`` 0) or per column (``axis`` 1)."""
    scale = np.abs(weight).max(axis=1 - axis) / levels
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    shaped = scale[None, :] if axis == 1 else scale[:, None]
    return np.clip(np.round(weight / shaped), -levels, levels).astype(np.int8), scale


def _row_lookups(name: str, gathers: list[onnx.NodeProto]) -> dict[str, list[onnx.NodeProto]]:
    """Turn each ``Gather(table, ids)`` into a lookup of int8 rows scaled by their own scales.

    Only the rows a run reads are dequantized: ``Gather(table_int8, ids)`` is cast to fp32 and
    multiplied by ``Gather(scales [rows, 1], ids)``. A DequantizeLinear of the whole table
    instead would convert all 30k rows of a word-embedding table on every run, since ONNX
    Runtime does not constant-fold DequantizeLinear. Returns the nodes to place after each
    rewritten Gather, keyed by that Gather's new output.
    """
    nodes = {}
    for index, gather in enumerate(gathers):
        ids, out, tag = gather.input[1], gather.output[0], f"{name}_lookup{index}"
        gather.input[0] = f"{name}_int8"
        gather.output[0] = f"{tag}_int8"
        nodes[gather.output[0]] = [
            helper.make_node("Cast", [f"{tag}_int8"], [f"{tag}_values"], name=f"{tag}_cast", to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [f"{name}_row_scale", ids], [f"{tag}_scale"], name=f"{tag}_scale"),
            helper.make_node("Mul", [f"{tag}_values", f"{tag}_scale"], [out], name=f"{tag}_dequantize")]
    return nodes


def weight_only(model: onnx.ModelProto, bits: int, exclude: set[str], matrices: bool = True,
                tables: bool = True) -> tuple[onnx.ModelProto, int]:
    """Store MatMul / Gemm / Attention weights and embedding tables as int8 with per-channel scales.

    A stored matrix is followed by a DequantizeLinear, which ONNX Runtime folds when the session
    loads given the session config ``runtime.session_config("weight-only")`` (recorded in the
    bundle's manifest; without it the dequantization would run with every inference): the file
    holds a quarter of the bytes and the arithmetic stays fp32 (near-lossless). A table gets one
    scale per row and is read through row lookups (``_row_lookups``). With ``bits`` 4
    the values use 15 levels ([-7, 7]) but are still stored one per byte: the training build
    of ONNX Runtime 1.19 lacks the MatMulNBits packer. ``matrices`` and ``tables`` choose what
    is stored: tables alone is the pass that follows an int8 recipe, whose quantizer leaves
    the word-embedding table (half of a MiniLM's bytes) in fp32.
    """
    levels = 127 if bits == 8 else 7
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, index))
    new_inits, new_nodes, count = [], [], 0
    lookups: dict[str, list[onnx.NodeProto]] = {}
    for init in list(model.graph.initializer):
        consumers = uses.get(init.name, [])
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) != 2 or not consumers:
            continue
        if any(node.name in exclude for node, _ in consumers):
            continue
        table_uses = [_table_use(node, index) for node, index in consumers]
        name = init.name
        if tables and all(table_uses):
            quantized, scale = _per_channel_int8(numpy_helper.to_array(init), 0, levels)
            new_inits += [numpy_helper.from_array(quantized, f"{name}_int8"),
                          numpy_helper.from_array(scale[:, None], f"{name}_row_scale")]
            lookups.update(_row_lookups(name, [node for node, _ in consumers]))
        elif matrices and all(_matrix_use(node, index) for node, index in consumers):
            quantized, scale = _per_channel_int8(numpy_helper.to_array(init), 1, levels)
            new_inits += [numpy_helper.from_array(quantized, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")]
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name],
                                              name=f"{name}_dequantize", axis=1))
        else:
            continue
        model.graph.initializer.remove(init)
        count += 1
    model.graph.initializer.extend(new_inits)
    ordered = list(new_nodes)
    for node in model.graph.node:
        ordered += [node, *(lookups.get(node.output[0], []) if node.output else [])]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    return model, count


def _with_inferred_shapes(source: Path, target: Path) -> Path:
    """``source`` with the shapes and types of every tensor, for static quantization.

    The static quantizer reads tensor types from ONNX shape inference, which does not know the
    contrib ops of a fused transformer (Attention, SkipLayerNormalization, BiasGelu) and so
    loses the types of everything after them; onnxruntime's symbolic shape inference knows them.
    Where it fails, the quantizer gets ``source`` as it is.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    try:
        model = SymbolicShapeInference.infer_shapes(onnx.load(str(source)), auto_merge=True)
    except Exception:  # best effort: the quantizer's own inference remains
        return source
    shaped = target.with_name(f"{target.stem}.shapes.onnx")
    onnx.save(model, str(shaped))
    return shaped


def _store_remaining_tables(target: Path, exclude: list[str], notes: list[str]) -> None:
    """Store the embedding tables an int8 quantizer left in fp32 as int8 (see ``weight_only``)."""
    model = onnx.load(str(target))
    model, count = weight_only(model, 8, set(exclude), matrices=False)
    if count:
        onnx.save(model, str(target))
        notes.append(f"{count} embedding table(s) stored int8")


def quantize(source: Path, target: Path, recipe, calibration: list[dict[str, np.ndarray]] | None = None) -> list[str]:
    """Apply ``recipe`` (a devices.Quantization) to ``source``; returns notes on what was done."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    model = onnx.load(str(source))
    exclude = excluded_nodes(model, recipe.exclude_nodes)
    ops = _op_types(model, recipe.op_types)
    weight_type = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}.get(recipe.weight_type, QuantType.QInt8)
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # fused graphs carry untyped contrib-op outputs
    notes = []
    if exclude:
        notes.append(f"kept {len(exclude)} node(s) in fp32")
    with quiet_python_logs():  # onnxruntime's quantizer advises pre-processing on the root logger
        try:
            if recipe.mode == "none":
                shutil.copyfile(source, target)
            elif recipe.mode == "dynamic":
                quantize_dynamic(str(source), str(target), op_types_to_quantize=ops, per_channel=recipe.per_channel,
                                 reduce_range=recipe.reduce_range, weight_type=weight_type, nodes_to_exclude=exclude,
                                 extra_options=extra)
                notes.append(f"dynamic {recipe.weight_type} ({', '.join(ops)})")
            elif recipe.mode == "static":
                if not calibration:
                    raise EdgeftError("Static quantization needs calibration data.", where="deploy",
                                      hint="deploy a run with training data, or use a profile with mode = \"dynamic\".")
                activation = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}.get(recipe.activation_type, QuantType.QUInt8)
                fmt = QuantFormat.QDQ if recipe.format == "qdq" else QuantFormat.QOperator
                shaped = _with_inferred_shapes(source, target)
                quantize_static(str(shaped), str(target), _Calibration(calibration), quant_format=fmt,
                                op_types_to_quantize=ops, per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
                                activation_type=activation, weight_type=weight_type, nodes_to_exclude=exclude,
                                extra_options=extra)
                if shaped != source:
                    shaped.unlink()
                notes.append(f"static {recipe.weight_type}/{recipe.activation_type} {recipe.format} on "
                             f"{len(calibration)} calibration batches")
            elif recipe.mode == "weight-only":
                bits = 4 if recipe.weight_type == "int4" else 8
                quantized, count = weight_only(model, bits, set(exclude), tables=recipe.quantize_embeddings)
                onnx.save(quantized, str(target))
                notes.append(f"weight-only int{bits}: {count} weight tensors stored quantized")
            elif recipe.mode == "fp16":
                from onnxruntime.transformers.float16 import convert_float_to_float16

                onnx.save(convert_float_to_float16(model, keep_io_types=True), str(target))
                notes.append("fp16 weights and compute, fp32 inputs and outputs")
            else:
                raise EdgeftError(f"Unknown quantization mode {recipe.mode!r}.", where="quantization.mode",
                                  hint="use dynamic, static, weight-only, fp16 or none.")
            if recipe.mode in ("dynamic", "static") and recipe.quantize_embeddings:
                _store_remaining_tables(target, exclude, notes)
        except EdgeftError:
            raise
        except Exception as exc:
            raise EdgeftError(f"Quantization ({recipe.mode}) failed: {exc}", where=str(source),
                              hint="try another device profile, or quantization.mode = \"none\".") from exc
    return notes
