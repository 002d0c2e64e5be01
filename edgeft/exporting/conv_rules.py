"""onnx-ad 0.3's reverse rule for Conv with two things it lacks for convolutional networks,
installed while edgeft differentiates a training graph (see :func:`convolution_rules`).

1. **A symbolic batch.** onnx-ad's rule needs the input's declared shape for the transposed
   convolution's output size and refuses when any dimension, the batch included, is symbolic. A
   training graph's batch is always symbolic, so every CNN failed with "Conv needs a declared
   input shape". The input gradient's size needs the spatial dimensions alone (the image size
   fixes them): the transposed convolution keeps the original pads, with ``output_padding`` for
   the rows a stride left unread (onnx-ad's ``output_shape`` re-splits uneven pads evenly, which
   is wrong for an asymmetric padding).
2. **The weight of a grouped (depthwise) convolution**, which onnx-ad does not differentiate.
   MobileNets and ConvNeXt are built of depthwise convolutions, so ``last:N`` on them had no
   portable graph. The gradient of a depthwise kernel entry (a, b) is the sum over the batch and
   the output positions of the output's adjoint times the input window it read, a strided Slice
   of the padded input: k*k slices, products and sums, as cheap as the forward convolution.
   Other grouped convolutions (several channels per group, or a channel multiplier) are still
   refused by onnx-ad's rule, by name.

Both are checked against PyTorch autograd in ``tests/test_architecture_gradients.py``. They use onnx-ad's
rule table and graph builder, so they are tied to the pinned onnx-ad version (``ONNX_AD``):
another version gets onnx-ad's own rules and, where they refuse, export's error names the
operator as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

ONNX_AD = "0.3.0"


def conv_reverse(ctx: Any, node: Any, grads: Any) -> list[Any]:
    """onnx-ad's reverse rule for Conv (the same helpers and layout), with the two changes of the
    module docstring: the input's spatial shape suffices, and a depthwise weight differentiates."""
    from onnx_ad import UnsupportedOperator
    from onnx_ad.rules import (_conv_attributes, _conv_weight_adjoint, _fold_seed_into_batch,  # noqa: PLC2701
                               _unfold_batch_into_seed)

    attrs, spatial = _conv_attributes(ctx, node)
    x, w, y = node.input[0], node.input[1], node.output[0]
    rank = ctx.rank(x)
    seeded = ctx.full(grads[0], y)
    contributions: list[Any] = [None]
    if ctx.asked_for(x):
        shape = ctx.shapes.shape(x)
        if shape is None or None in shape[2:]:
            raise UnsupportedOperator("Conv needs its input's spatial shape declared in reverse mode, so the "
                                      "transposed convolution knows how much of its output to keep")
        # the input's size back from the output's: the original pads, and output_padding for the rows
        # and columns a stride left unread (onnx-ad's output_shape re-splits uneven pads evenly)
        kernel_w = ctx.shapes.static(w)
        if kernel_w is None:
            raise UnsupportedOperator("Conv needs a declared weight shape in reverse mode")
        pads, strides, dilations = attrs["pads"], attrs["strides"], attrs["dilations"]
        reach = [(kernel_w[2 + i] - 1) * dilations[i] + 1 for i in range(spatial)]
        unread = [(shape[2 + i] + pads[i] + pads[spatial + i] - reach[i]) % strides[i] for i in range(spatial)]
        transposed = dict(attrs, output_padding=unread)
        transposed.pop("kernel_shape", None)
        folded = _fold_seed_into_batch(ctx, seeded, y)
        contributions[0] = _unfold_batch_into_seed(
            ctx, ctx.b.op("ConvTranspose", [folded, w], stem="a_conv", **transposed), x, rank)
    kernel = ctx.shapes.static(w)
    depthwise = attrs["group"] > 1 and kernel is not None and kernel[0] == attrs["group"] and kernel[1] == 1
    if depthwise and spatial == 2 and ctx.asked_for(w):
        contributions.append(_depthwise_weight(ctx, node, attrs, kernel, seeded))
    else:
        contributions.append(_conv_weight_adjoint(ctx, node, attrs, spatial, seeded))
    if len(node.input) > 2 and node.input[2] and ctx.asked_for(node.input[2]):
        outside = [a for a in range(ctx.rank(y)) if a != 1]
        contributions.append(ctx.reshape_like(ctx.reduce_sum(seeded, outside, keepdims=0), node.input[2]))
    return contributions


def _depthwise_weight(ctx: Any, node: Any, attrs: dict[str, Any], kernel: tuple[int, ...], seeded: Any) -> Any:
    """d L / d W of a depthwise convolution: entry (c, 0, a, b) is the sum over the batch and the
    output positions of the adjoint times the input window offset by (a, b); [out, 1, kh, kw, seeds]."""
    from onnx_ad import UnsupportedOperator

    x, y = node.input[0], node.output[0]
    out = ctx.shapes.shape(y)
    if out is None or None in out[2:]:
        raise UnsupportedOperator("a depthwise Conv needs its output's spatial shape declared to differentiate "
                                  "its weight")
    pads = attrs["pads"]
    padded = ctx.b.op("Pad", [x, ctx.b.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])], mode="constant",
                      stem="dw_padded") if any(pads) else x
    (stride_h, stride_w), (dilation_h, dilation_w) = attrs["strides"], attrs["dilations"]
    entries = []
    for a in range(kernel[2]):
        for b in range(kernel[3]):
            start = [a * dilation_h, b * dilation_w]
            end = [start[0] + stride_h * (out[2] - 1) + 1, start[1] + stride_w * (out[3] - 1) + 1]
            window = ctx.b.op("Slice", [padded, ctx.b.ints(start), ctx.b.ints(end), ctx.b.ints([2, 3]),
                                        ctx.b.ints([stride_h, stride_w])], stem="dw_window")
            product = ctx.b.op("Mul", [ctx.b.op("Unsqueeze", [window, ctx.b.ints([-1])], stem="dw_window_seed"),
                                       seeded], stem="dw_product")
            entry = ctx.reduce_sum(product, [0, 2, 3], keepdims=0)  # [out, seeds]
            entries.append(ctx.b.op("Unsqueeze", [entry, ctx.b.ints([1])], stem="dw_entry"))
    stacked = ctx.b.op("Concat", entries, axis=1, stem="dw_entries")  # [out, kh * kw, seeds]
    return ctx.b.op("Reshape", [stacked, ctx.b.ints([kernel[0], 1, kernel[2], kernel[3], -1])], stem="dw_weight")


@contextlib.contextmanager
def convolution_rules() -> Iterator[None]:
    """onnx-ad with :func:`conv_reverse` for Conv, for the duration of the block (the pinned version
    only: the rule uses onnx-ad's internal helpers)."""
    import onnx_ad
    from onnx_ad import rules

    if onnx_ad.__version__ != ONNX_AD:
        yield
        return
    saved = rules.REVERSE["Conv"]
    rules.REVERSE["Conv"] = conv_reverse
    try:
        yield
    finally:
        rules.REVERSE["Conv"] = saved
