"""The optimizers as one standard-ONNX graph per update (the portable backend's
``portable_optimizer.onnx``), computing exactly what ONNX Runtime's optimizers compute."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeft.backends.portable import ADAMW, optimizer_io
from edgeft.errors import EdgeftError


def build_optimizer(optimizer: str, shapes: list[list[int]], ir_version: int, opset: int = 17) -> onnx.ModelProto:
    """One optimizer step over every trainable tensor, as ORT's optimizers compute it.

    AdamW (ORT ``AdamWOptimizer``, ``adam_mode=1``, bias correction on): ``m1 = b1 m1 + (1-b1) g``,
    ``m2 = b2 m2 + (1-b2) g^2``, ``p -= lr sqrt(1-b2^t)/(1-b1^t) m1 / (sqrt(m2) + eps)``, then
    ``p -= lr wd p`` (one pass: ``p *= 1 - lr wd``). SGD: ``p -= lr g``. ``step`` is the 1-based number of this update.
    """
    names = [f"{i}" for i in range(len(shapes))]
    inputs, outputs = optimizer_io(optimizer, names)
    value_infos = [helper.make_tensor_value_info("learning_rate", TensorProto.FLOAT, []),
                   helper.make_tensor_value_info("step", TensorProto.INT64, []),
                   helper.make_tensor_value_info("weight_decay", TensorProto.FLOAT, [])]
    for name in inputs[3:]:
        value_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes[int(name.split(".")[1])]))
    out_infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[int(n.split(".")[1])]) for n in outputs]
    inits, nodes = [], []

    def const(name: str, value: float) -> str:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    if optimizer == "adamw":
        b1, b2 = const("beta1", ADAMW["beta1"]), const("beta2", ADAMW["beta2"])
        one, eps = const("one", 1.0), const("epsilon", ADAMW["epsilon"])
        c1, c2 = const("one_minus_beta1", 1.0 - ADAMW["beta1"]), const("one_minus_beta2", 1.0 - ADAMW["beta2"])
        nodes += [helper.make_node("Cast", ["step"], ["step_f"], to=TensorProto.FLOAT),
                  helper.make_node("Pow", [b1, "step_f"], ["b1_t"]),
                  helper.make_node("Pow", [b2, "step_f"], ["b2_t"]),
                  helper.make_node("Sub", [one, "b1_t"], ["correction1"]),
                  helper.make_node("Sub", [one, "b2_t"], ["correction2"]),
                  helper.make_node("Sqrt", ["correction2"], ["sqrt_correction2"]),
                  helper.make_node("Mul", ["learning_rate", "sqrt_correction2"], ["lr_scaled"]),
                  helper.make_node("Div", ["lr_scaled", "correction1"], ["lr_corrected"]),
                  helper.make_node("Mul", ["learning_rate", "weight_decay"], ["decay"]),
                  helper.make_node("Sub", [one, "decay"], ["keep"])]
        for i in names:
            p, g, m1, m2 = f"param.{i}", f"grad.{i}", f"m1.{i}", f"m2.{i}"
            nodes += [helper.make_node("Mul", [b1, m1], [f"a.{i}"]),
                      helper.make_node("Mul", [c1, g], [f"b.{i}"]),
                      helper.make_node("Add", [f"a.{i}", f"b.{i}"], [f"new_m1.{i}"]),
                      helper.make_node("Mul", [g, g], [f"g2.{i}"]),
                      helper.make_node("Mul", [b2, m2], [f"c.{i}"]),
                      helper.make_node("Mul", [c2, f"g2.{i}"], [f"d.{i}"]),
                      helper.make_node("Add", [f"c.{i}", f"d.{i}"], [f"new_m2.{i}"]),
                      helper.make_node("Sqrt", [f"new_m2.{i}"], [f"root.{i}"]),
                      helper.make_node("Add", [f"root.{i}", eps], [f"denom.{i}"]),
                      helper.make_node("Div", [f"new_m1.{i}", f"denom.{i}"], [f"ratio.{i}"]),
                      helper.make_node("Mul", ["lr_corrected", f"ratio.{i}"], [f"update.{i}"]),
                      helper.make_node("Sub", [p, f"update.{i}"], [f"stepped.{i}"]),
                      # p - lr wd p after the update, as one pass over the tensor: p (1 - lr wd)
                      helper.make_node("Mul", [f"stepped.{i}", "keep"], [f"new_param.{i}"])]
    elif optimizer == "sgd":
        for i in names:
            nodes += [helper.make_node("Mul", ["learning_rate", f"grad.{i}"], [f"update.{i}"]),
                      helper.make_node("Sub", [f"param.{i}", f"update.{i}"], [f"new_param.{i}"])]
    else:
        raise EdgeftError(f"Unknown optimizer {optimizer!r}.", where="--optimizer", hint="use adamw or sgd.")
    for index, node in enumerate(nodes):
        node.name = f"optimizer/{node.op_type}_{index}"
    graph = helper.make_graph(nodes, f"portable_{optimizer}", value_infos, out_infos, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgeft")
    model.ir_version = ir_version
    return model
