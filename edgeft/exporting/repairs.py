"""Graph repairs that ONNX Runtime's gradient builder needs, applied before generate_artifacts.

The TorchScript exporter writes LayerNormalization with only its first output and Dropout
without its mask, but ORT's gradient builders read those optional outputs (upstream issues
microsoft/onnxruntime#22465 and #19427). Declaring them is exact: the forward values do not
change. The optimizer model written by recent onnx releases carries an IR version newer than
older runtimes load; it is lowered to the runtime's maximum when the model's opsets allow it.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeft.errors import EdgeftError

_OPTIONAL_OUTPUTS = {
    "LayerNormalization": ("saved_mean", "saved_inv_std_dev"),
    "Dropout": ("mask",),
}


def declare_optional_outputs(model: onnx.ModelProto) -> list[str]:
    """Add the optional outputs gradient builders read; returns a line per kind of repair."""
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        extra = _OPTIONAL_OUTPUTS.get(node.op_type)
        if not extra or node.domain not in ("", "ai.onnx"):
            continue
        wanted = 1 + len(extra)
        if len(node.output) >= wanted:
            continue
        base = node.output[0]
        for suffix in extra[len(node.output) - 1 :]:
            name = f"{base}_{suffix}"
            while name in taken:
                name += "_"
            taken.add(name)
            node.output.append(name)
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return [f"declared the optional outputs of {count} {op} node(s) for ORT's gradient builder"
            for op, count in sorted(counts.items())]


def lower_ir_versions(folder: Path, files: list[str], max_ir: int) -> list[str]:
    """Rewrite models whose IR version the runtime cannot load; returns a line per change."""
    done = []
    for name in files:
        path = folder / name
        model = onnx.load(str(path), load_external_data=False)
        if model.ir_version <= max_ir:
            continue
        needed = max(onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True), 3)
        if needed > max_ir:
            raise EdgeftError(
                f"{name} needs ONNX IR version {needed}, but the installed onnxruntime loads at most {max_ir}.",
                where=str(path), hint="install the onnxruntime version listed in edgeft's constraints file.")
        before = model.ir_version
        model.ir_version = max_ir
        onnx.save(model, str(path))
        done.append(f"lowered the IR version of {name} from {before} to {max_ir} (the runtime's maximum)")
    return done


def rename_label_input(folder: Path, files: list[str], forward_inputs: list[str], name: str = "labels") -> None:
    """Give the loss's target input one name for every loss (ORT calls it ``labels`` or ``target``).

    The device side then feeds ``labels`` whatever the loss; only graph inputs are renamed, so
    the checkpoint (keyed by parameter names) is unaffected.
    """
    for fname in files:
        path = folder / fname
        model = onnx.load(str(path), load_external_data=False)
        params = {i.name for i in model.graph.initializer}
        extra = [i for i in model.graph.input if i.name not in forward_inputs and i.name not in params]
        targets = [i for i in extra if i.name in ("labels", "target")]
        if not targets or targets[0].name == name:
            continue
        old = targets[0].name
        targets[0].name = name
        for node in model.graph.node:
            for index, value in enumerate(node.input):
                if value == old:
                    node.input[index] = name
        onnx.save(model, str(path))
