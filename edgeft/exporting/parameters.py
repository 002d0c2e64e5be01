"""``edgeft export --list-parameters``: the names a ``--train`` regular expression is matched against.

The names are listed in forward order with their shape, the block they belong to (``head`` for
what the forward pass uses after the last block) and whether the given ``--train`` selects
them, so a user can write a regex, or check one, before the slow export.
"""

from __future__ import annotations

from typing import Any

from edgeft.errors import EdgeftError
from edgeft.exporting.artifacts import ExportOptions, load_source
from edgeft.report import group_name
from edgeft.selection import find_blocks, head_names, select_trainable


def list_parameters(options: ExportOptions) -> dict[str, Any]:
    """The model's parameters (name, shape, block, trainable under ``options.train``), and the
    --train problem when the spec selects nothing (the listing is still given)."""
    import numpy as np

    loaded, name = load_source(options)
    shared: list[str] = []
    if loaded.module is not None:
        from edgeft.exporting.torch_export import trace_forward

        trace = trace_forward(loaded.module, loaded.sample)
        order, shared = trace.order, trace.shared
        shapes = {n: list(p.shape) for n, p in loaded.module.named_parameters(remove_duplicate=False)}
    else:
        from edgeft.exporting.onnx_source import parameter_order

        order = parameter_order(loaded.onnx_model)
        shapes = {i.name: list(i.dims) for i in loaded.onnx_model.graph.initializer}
    blocks = find_blocks(order)
    head = set(head_names(order, blocks))
    problem = None
    try:
        selected = set(select_trainable(order, options.train, shared))
    except EdgeftError as exc:
        selected, problem = set(), exc.what
    rows = [{"name": n, "shape": shapes.get(n, []), "parameters": int(np.prod(shapes.get(n, [])) if shapes.get(n) else 1),
             "block": "head" if n in head else group_name(n, blocks.prefix if blocks else None),
             "trainable": n in selected} for n in order]
    return {"model": name, "train": options.train, "blocks": blocks.count if blocks else 0,
            "block_prefix": blocks.prefix if blocks else None, "problem": problem, "parameters": rows}
