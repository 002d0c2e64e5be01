"""Portable gradients for the architectures onnx-ad alone could not differentiate: CNNs and DeBERTa-v2.

One depthwise convolution (strides, dilations, uneven pads) against PyTorch; then ResNet,
ConvNeXt and MobileNetV2 (random-weight transformers models) with ``last:1``: the
portable step's loss and gradients against PyTorch autograd (relative 1e-3), at a batch size
other than the one export sampled, through depthwise convolutions and frozen BatchNorm. An ONNX
MobileNetV3 (HardSwish, HardSigmoid, squeeze-excitation, BatchNorm folded by the exporter, as
user files come) against a central difference of its own loss. Then a short fine-tune learns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import architectures
from edgeft.backends.portable import PortableTrainer
from test_portable import _assert_gradients_match, _forward_weights

HF_MODELS = ["ResNet", "ConvNeXt", "MobileNetV2", "EfficientNet"]


@pytest.fixture(scope="module")
def cnn_exports(tmp_path_factory, export_cache):
    root = tmp_path_factory.mktemp("cnns")
    built = {name: architectures.BUILDERS[name](root / name.split()[0]) for name in [*HF_MODELS, "MobileNetV3 (ONNX)"]}
    return {name: export_cache(model=str(path), train="last:1", dropout=False, formats=("portable",))
            for name, path in built.items()}, built


def _pixels(count: int, seed: int = 0) -> np.ndarray:
    size = architectures.IMAGE
    return np.random.default_rng(seed).standard_normal((count, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name", HF_MODELS)
def test_gradients_match_pytorch_autograd(cnn_exports, name):
    import torch
    from transformers import AutoModelForImageClassification

    exports, folders = cnn_exports
    result = exports[name]
    batch = {"pixel_values": _pixels(5), "labels": np.array([0, 1, 2, 1, 0], dtype=np.int64)}
    trainer = PortableTrainer(result.manifest, threads=1)  # the prefix, then the tail's step graph
    loss, logits = trainer.train_step(batch)

    reference = AutoModelForImageClassification.from_pretrained(folders[name], local_files_only=True).eval()
    weights = _forward_weights(result.folder)
    reference.load_state_dict({k: weights[f"model.{k}"] for k in reference.state_dict() if f"model.{k}" in weights},
                              strict=False)
    out = reference(pixel_values=torch.from_numpy(batch["pixel_values"])).logits
    expected = torch.nn.functional.cross_entropy(out, torch.from_numpy(batch["labels"]))
    expected.backward()
    params = {f"model.{k}": v for k, v in reference.named_parameters()}
    trainable = [t.name for t in result.trainable]
    assert any(params[n].dim() == 4 for n in trainable)  # convolution kernels train
    assert loss == pytest.approx(expected.item(), rel=1e-4)
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-3, atol=1e-4)
    _assert_gradients_match(trainer.gradients(), {n: params[n].grad.numpy() for n in trainable})


def test_an_onnx_mobilenet_v3_gradient_is_its_losss_derivative(cnn_exports):
    exports, _ = cnn_exports
    result = exports["MobileNetV3 (ONNX)"]
    manifest = result.manifest
    # the exporter folded BatchNorm into the convolutions (onnx::Conv_157, ...): named after their
    # modules, last:1 is exactly the last block and the head
    assert not [t.name for t in result.tensors if t.name.startswith("onnx::")]
    assert {t.name.split(".")[0] + "." + t.name.split(".")[1] for t in result.trainable} == {"blocks.2", "classifier.0",
                                                                                            "classifier.2"}
    assert len(result.trainable) == 14 and any("folded parameter" in note for note in result.notes)
    batch = {"pixel_values": _pixels(3, seed=1), "labels": np.array([2, 0, 1], dtype=np.int64)}
    trainer = PortableTrainer(manifest, threads=1)
    trainer.train_step(batch)
    gradients = trainer.gradients()
    start = trainer.parameters()
    rng = np.random.default_rng(2)
    direction = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in start.items()}
    step = 1e-2
    losses = []
    for sign in (1, -1):
        trainer.load_parameters({n: (v.astype(np.float64) + sign * step * direction[n]).astype(np.float32)
                                 for n, v in start.items()})
        losses.append(trainer.eval_step(batch)[0])
    numeric = (losses[0] - losses[1]) / (2 * step)
    analytic = sum(float((gradients[n].reshape(d.shape) * d).sum()) for n, d in direction.items())
    assert analytic == pytest.approx(numeric, rel=2e-2)
    kinds = {node.op_type for node in __import__("onnx").load(str(manifest.path("tail_portable_step"))).graph.node}
    assert {"HardSwish", "HardSigmoid"} <= kinds or {"HardSigmoid"} <= kinds


def test_a_cnn_fine_tunes_on_the_portable_backend(cnn_exports, tmp_path):
    from edgeft.training.loop import DataOptions, TrainConfig, train

    exports, _ = cnn_exports
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 48).astype(np.int64)
    pixels = _pixels(48, seed=4) + labels[:, None, None, None].astype(np.float32)  # the class shifts the image
    np.savez(tmp_path / "train.npz", pixel_values=pixels, labels=labels)
    summary = train(exports["MobileNetV2"].folder, DataOptions(train=tmp_path / "train.npz"), tmp_path / "run",
                    TrainConfig(epochs=6, batch_size=8, lr=1e-2, val_fraction=0.25), threads=1, backend="portable")
    assert summary["backend"] == "portable"
    assert summary["after"]["loss"] < summary["before"]["loss"]


@pytest.mark.parametrize("stride,dilation,pads", [(1, 1, [1, 1, 1, 1]), (2, 1, [1, 0, 1, 2]), (2, 1, [0, 1, 1, 0]),
                                                  (1, 2, [2, 2, 2, 2])])
def test_a_depthwise_kernels_gradient_matches_pytorch_on_one_convolution(stride, dilation, pads):
    """The Conv rule alone (the depthwise weight, and the input through the transposed convolution
    at a symbolic batch), on asymmetric data, strides, dilations and uneven pads."""
    import onnx
    import onnx_ad
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    from edgeft.exporting.conv_rules import convolution_rules

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    weights, image = torch.from_numpy(w).requires_grad_(), torch.from_numpy(x).requires_grad_()
    out = torch.nn.functional.conv2d(torch.nn.functional.pad(image, (pads[1], pads[3], pads[0], pads[2])),
                                     weights, stride=stride, dilation=dilation, groups=4)
    r = rng.standard_normal(tuple(out.shape)).astype(np.float32)
    (out * torch.from_numpy(r)).sum().backward()
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=4, kernel_shape=[3, 3], strides=[stride] * 2,
                          dilations=[dilation] * 2, pads=pads),
         helper.make_node("Mul", ["y", "r"], ["yr"]), helper.make_node("ReduceSum", ["yr"], ["loss"], keepdims=0)],
        "depthwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 9, 7]),
                      helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 1, 3, 3]),
                      helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", *out.shape[1:]])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with convolution_rules():
        derived = onnx_ad.reverse(model, inputs=["w", "x"], outputs=["loss"], prefix="d.", layout="onnx")
    session = ort.InferenceSession(derived.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = {"x": x, "w": w, "r": r, "d.loss": np.ones([1], np.float32)}
    found = dict(zip(names, session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})))
    np.testing.assert_allclose(found["d.w"].reshape(w.shape), weights.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(found["d.x"].reshape(x.shape), image.grad.numpy(), rtol=1e-4, atol=1e-4)


REL = "model.deberta.encoder.rel_embeddings.weight"


@pytest.mark.parametrize("train", ["last:1", r"rel_embeddings|layer\.1\.|pooler|classifier"])
def test_deberta_v2_gradients_match_pytorch_autograd(tmp_path, export_cache, train):
    """DeBERTa-v2 tiles its relative-position keys over the batch with run-time repeats, which
    onnx-ad does not differentiate: the step graph writes the Tile as a broadcast instead. Its
    relative-position embeddings, which the encoder reads without calling their module, are a
    parameter like the others: frozen under last:1 (constants to the tail, outside the
    per-example cache) and trainable by name."""
    folder = architectures.deberta_v2(tmp_path / "deberta")
    result = export_cache(model=str(folder), train=train, dropout=False, formats=("portable",))
    trains = {t.name: t.trainable for t in result.tensors}
    assert trains[REL] is (train != "last:1")
    # every layer's attention reads the relative embeddings: trained, they leave no prefix to cache
    assert result.manifest.data["cache"]["available"] is (train == "last:1")
    _assert_text_gradients_match(folder, result)


def test_deberta_v2_relative_position_dropout_stays_live_and_exports_repeat(tmp_path):
    """DeBERTa drops out its relative-position embeddings, which no example changes: onnx-ad's
    constant folding used to evaluate that Dropout once, freezing one random mask into the step
    graph (a different one in every export). Two exports are now byte-identical, and the step
    keeps every live Dropout of the training graph (none became a constant)."""
    import onnx

    import edgeft

    folder = architectures.deberta_v2(tmp_path / "deberta")
    steps = [edgeft.export(str(folder), labels=["a", "b", "c"], train="last:1", formats=("portable",),
                           output=tmp_path / name) for name in ("first", "second")]
    graphs = [(Path(step) / "tail_portable_step.onnx").read_bytes() for step in steps]
    assert graphs[0] == graphs[1]
    step = onnx.ModelProto.FromString(graphs[0])
    folded = [n for n in step.graph.node if n.op_type == "Constant" and n.attribute[0].t.data_type == onnx.TensorProto.FLOAT
              and any("pos_key_proj" in o or "rel_embeddings" in o for o in n.output)]  # values, not shapes
    assert not folded, [n.output[0] for n in folded]


def _assert_text_gradients_match(folder, result) -> None:
    """One portable step of a text classifier's artifacts against PyTorch autograd on the folder's model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from conftest import text_batch

    batch = text_batch(result.folder, ["turn on the lights", "play some music please", "is it rain", "the door"])
    batch["labels"] = np.array([0, 1, 2, 1], dtype=np.int64)
    trainer = PortableTrainer(result.manifest, threads=1)
    loss, logits = trainer.train_step(batch)

    reference = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True,
                                                                   attn_implementation="eager").eval()
    weights = _forward_weights(result.folder)
    reference.load_state_dict({k: weights[f"model.{k}"] for k in reference.state_dict() if f"model.{k}" in weights},
                              strict=False)
    out = reference(input_ids=torch.from_numpy(batch["input_ids"]),
                    attention_mask=torch.from_numpy(batch["attention_mask"])).logits
    expected = torch.nn.functional.cross_entropy(out, torch.from_numpy(batch["labels"]))
    expected.backward()
    params = {f"model.{k}": v for k, v in reference.named_parameters()}
    assert loss == pytest.approx(expected.item(), rel=1e-4)
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=1e-3, atol=1e-4)
    _assert_gradients_match(trainer.gradients(), {t.name: params[t.name].grad.numpy() for t in result.trainable})


def test_albert_shared_layer_is_refused_for_last_n_and_trains_by_name(tmp_path, export_cache):
    """ALBERT runs one layer's weights as all its layers: last:1 is refused with the reason, and
    the regular expression the message gives trains the shared layer, whose gradient (the sum
    over its four uses) matches PyTorch autograd."""
    from edgeft.errors import EdgeftError

    folder = architectures.albert(tmp_path / "albert")
    with pytest.raises(EdgeftError, match="runs one set of layer weights") as caught:
        export_cache(model=str(folder), train="last:1", dropout=False, formats=("portable",))
    regex = caught.value.hint.split("--train '")[1].split("'")[0]
    result = export_cache(model=str(folder), train=regex, dropout=False, formats=("portable",))
    assert len(result.trainable) == 16 and all("albert_layer_groups.0.albert_layers.0." in t.name for t in result.trainable)
    _assert_text_gradients_match(folder, result)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
def test_same_padding_and_whole_map_pooling_rewrites_compute_what_the_operators_do(mode):
    """The rewrites before differentiation (edgeft/exporting/rewrites.py) on shapes where they
    matter: a stride-2 "same" convolution of an even map (odd total padding: its side is the
    mode's), and ceil-mode pools whose window is larger than the map; a pool of many windows
    is left alone."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edgeft.exporting.graph_tools import Names
    from edgeft.exporting.rewrites import explicit_conv_pads, global_average_pools

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], auto_pad=mode, strides=[2, 2], group=4),
             helper.make_node("AveragePool", ["c"], ["whole"], kernel_shape=[7, 9], strides=[7, 9], ceil_mode=1),
             helper.make_node("AveragePool", ["c"], ["many"], kernel_shape=[2, 2], strides=[1, 1], ceil_mode=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 10, 12])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("c", "whole", "many")],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 4, 10, 12)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})

    expected = run(model)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert explicit_conv_pads(rewritten) == 1 and global_average_pools(rewritten, Names(rewritten)) == 1
    assert [n.op_type for n in rewritten.graph.node] == ["Conv", "ReduceMean", "AveragePool"]
    for found, wanted in zip(run(rewritten), expected):
        np.testing.assert_allclose(found, wanted, rtol=1e-5, atol=1e-6)
