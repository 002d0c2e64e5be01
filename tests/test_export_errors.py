"""Every failure a user can cause in export: one clear EdgeftError, and no half-written folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeft.errors import EdgeftError
from edgeft.exporting.artifacts import ExportOptions, export_artifacts


def no_partials(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.endswith(".partial")]


def export(tmp_path: Path, **kwargs):
    kwargs.setdefault("output", tmp_path / "out")
    return export_artifacts(ExportOptions(**kwargs))


def test_missing_model(tmp_path):
    with pytest.raises(EdgeftError, match="was not found") as info:
        export(tmp_path, model=str(tmp_path / "nowhere"))
    assert "built-in name" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_missing_onnx_file(tmp_path):
    with pytest.raises(EdgeftError, match="does not exist"):
        export(tmp_path, model=str(tmp_path / "model.onnx"))


def test_unreadable_onnx_model(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    with pytest.raises(EdgeftError, match="is not a valid ONNX model") as info:
        export(tmp_path, model=str(bad))
    assert info.value.where == str(bad)


def test_folder_without_config(tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(EdgeftError, match="no config.json"):
        export(tmp_path, model=str(folder))


def test_pattern_matching_nothing(tiny_onnx, tmp_path):
    with pytest.raises(EdgeftError, match="matches no parameter") as info:
        export(tmp_path, model=str(tiny_onnx), train="decoder\\.")
    assert "head.bias" in info.value.hint  # shows real names to pick from
    assert no_partials(tmp_path)


def test_too_many_blocks(tiny_onnx, tmp_path):
    with pytest.raises(EdgeftError, match="asks for 9 blocks but the model has 3"):
        export(tmp_path, model=str(tiny_onnx), train="last:9")


def _graph_with(op: str, path: Path, domain: str = "") -> Path:
    w1 = numpy_helper.from_array(np.random.default_rng(0).random((4, 4)).astype(np.float32), "l1.weight")
    w2 = numpy_helper.from_array(np.random.default_rng(1).random((4, 3)).astype(np.float32), "head.weight")
    nodes = [helper.make_node("MatMul", ["x", "l1.weight"], ["h"], name="first"),
             helper.make_node(op, ["h"], ["h2"], name="rounding", domain=domain),
             helper.make_node("MatMul", ["h2", "head.weight"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w1, w2],
                              value_info=[helper.make_tensor_value_info("h2", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_operator_without_gradient_names_op_and_node(tmp_path):
    model = _graph_with("FastGelu", tmp_path / "gelu.onnx", domain="com.microsoft")  # onnx-ad has no rule for it
    with pytest.raises(EdgeftError) as info:
        export(tmp_path, model=str(model), train="l1")
    err = info.value
    assert "portable training step cannot be built" in err.what and "no reverse rule for FastGelu" in err.what
    assert "--train head" in err.hint and "--format ort-training" in err.hint
    assert not (tmp_path / "out").exists() and no_partials(tmp_path)
    # training only what comes after the node works
    result = export(tmp_path, model=str(model), train="head", output=tmp_path / "ok")
    assert [t.name for t in result.trainable] == ["head.weight"]


def test_existing_output_needs_force_and_only_an_edgeft_folder_is_replaced(tiny_onnx, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(EdgeftError, match="holds files edgeft did not write") as info:
            export(tmp_path, model=str(tiny_onnx), train="head", force=force)
        assert "--force" not in info.value.hint
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()  # an empty folder is written into without --force
    first = export(tmp_path, model=str(tiny_onnx), train="head")
    with pytest.raises(EdgeftError, match="already exists") as info:
        export(tmp_path, model=str(tiny_onnx), train="head")
    assert "--force" in info.value.hint
    result = export(tmp_path, model=str(tiny_onnx), train="last:1", force=True)
    assert (result.folder / "manifest.json").is_file() and result.folder == first.folder
    assert [t.name for t in result.trainable] != [t.name for t in first.trainable]


def test_failed_export_with_force_keeps_previous_folder(tiny_onnx, tmp_path):
    first = export(tmp_path, model=str(tiny_onnx), train="head")
    before = (first.folder / "manifest.json").read_bytes()
    model = _graph_with("FastGelu", tmp_path / "gelu.onnx", domain="com.microsoft")
    with pytest.raises(EdgeftError, match="no reverse rule"):
        export(tmp_path, model=str(model), train="l1", force=True)
    assert (first.folder / "manifest.json").read_bytes() == before
    assert no_partials(tmp_path)


def test_failed_write(tiny_onnx, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(EdgeftError, match="Could not write") as info:
        export(tmp_path, model=str(tiny_onnx), train="head", output=blocker / "out")
    assert "nothing was changed" in info.value.hint


def test_bad_factory_and_inputs(tmp_path):
    with pytest.raises(EdgeftError, match="needs the shape of its inputs"):
        export(tmp_path, model="models:mlp")
    with pytest.raises(EdgeftError, match="not NAME:DTYPE:DIMS"):
        export(tmp_path, model="models:mlp", inputs=["x:float32"])
    with pytest.raises(EdgeftError, match="returned str, not a torch.nn.Module"):
        export(tmp_path, model="models:not_a_module", inputs=["x:float32:batch,8"])
    with pytest.raises(EdgeftError, match="Could not import"):
        export(tmp_path, model="no_such_pkg.mod:build", inputs=["x:float32:batch,8"])
    with pytest.raises(EdgeftError, match="failed on the sample inputs"):
        export(tmp_path, model="models:mlp", inputs=["x:float32:batch,5"])


def test_label_count_must_match_onnx_output(tiny_onnx, tmp_path):
    with pytest.raises(EdgeftError, match="3 values per example but 2 labels"):
        export(tmp_path, model=str(tiny_onnx), label_names=["a", "b"], train="head")
