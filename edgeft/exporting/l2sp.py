"""L2-SP: a loss term that pulls the fine-tuned weights toward their pretrained values.

``loss = task loss + strength / 2 * sum over w of ||w - w_pretrained||^2`` (Li, Grandvalet and
Davoine, "Explicit inductive bias for transfer learning with convolutional networks", 2018).
Plain weight decay pulls toward zero, which on a few hundred examples lets the trainable
layers forget what pretraining taught them; L2-SP keeps them near the starting point instead.
Only pretrained tensors are pulled: a newly initialised head has no meaningful start and is
left to weight decay.

The term is the same in ONNX Runtime's training graphs and in the portable step graphs
(:class:`edgeft.exporting.losses.WithL2SP` adds it to a task's loss block). Its strength is a scalar graph
input, ``l2sp_strength``, so ``edgeft train --l2sp`` chooses it without a re-export and
evaluation feeds 0: validation losses and metrics are the task's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeft.manifest import L2SP_INPUT


def append_penalty(graph: onnx.GraphProto, task_loss: str, tensors: list[str], values: Mapping[str, np.ndarray],
                   output: str, fresh: Callable[[str], str]) -> None:
    """Write ``output = task_loss + l2sp_strength / 2 * sum ||w - values[w]||^2`` over ``tensors``
    into ``graph`` (standard operators: Sub, Mul, ReduceSum, Add) and add the strength input."""
    # a [1] tensor, not a scalar: ORT's training Module turns a 0-d numpy input into shape [1]
    graph.input.append(helper.make_tensor_value_info(L2SP_INPUT, TensorProto.FLOAT, [1]))
    total = ""
    for name in tensors:
        pretrained, diff, square, summed = (fresh(f"l2sp.{name}.{s}") for s in ("pretrained", "diff", "square", "sum"))
        graph.initializer.append(numpy_helper.from_array(np.asarray(values[name], np.float32), pretrained))
        graph.node.extend([helper.make_node("Sub", [name, pretrained], [diff]),
                           helper.make_node("Mul", [diff, diff], [square]),
                           helper.make_node("ReduceSum", [square], [summed], keepdims=0)])
        if total:
            accumulated = fresh("l2sp.total")
            graph.node.append(helper.make_node("Add", [total, summed], [accumulated]))
            total = accumulated
        else:
            total = summed
    strength, half, scale, penalty = (fresh(f"l2sp.{s}") for s in ("strength", "half", "scale", "penalty"))
    graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), half))
    graph.node.extend([helper.make_node("Squeeze", [L2SP_INPUT], [strength]),
                       helper.make_node("Mul", [strength, half], [scale]),
                       helper.make_node("Mul", [scale, total], [penalty]),
                       helper.make_node("Add", [task_loss, penalty], [output])])
