"""edgeft deploy, predict and bench on tiny models: every profile, the accuracy guard, tampering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from conftest import cli_calls, run_device_side
from edgeft.deployment.bundle import Bundle
from edgeft.deployment.pipeline import DeployOptions, deploy
from edgeft.deployment.quantize import weight_only
from edgeft.devices import list_profiles
from edgeft.errors import EdgeftError
from edgeft.training.loop import DataOptions, TrainConfig, train
from test_train import LABELS, dataset, write_csv, write_image_folder


@pytest.fixture(scope="module")
def text_run(tiny_bert, export_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deploy-run")
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder
    train_csv, val_csv = write_csv(root / "train.csv", dataset(0, 30)), write_csv(root / "val.csv", dataset(1, 10))
    train(artifacts, DataOptions(train=train_csv, val=val_csv), root / "run",
          TrainConfig(epochs=5, batch_size=8, lr=3e-3), threads=1)
    return root / "run"


@pytest.fixture(scope="module")
def bundles(text_run, tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("bundles")
    return {p.name: deploy(DeployOptions(source=text_run, device=p.name, output=root / p.name))
            for p in list_profiles()}


def test_every_profile_deploys_and_predicts(bundles):
    assert len(bundles) >= 8
    for name, report in bundles.items():
        bundle = Bundle(Path(report["bundle"]))  # verifies every sha256
        assert bundle.manifest.data["device"] == name
        assert set(bundle.manifest.data["files"]) >= {"model", "tokenizer", "labels", "profile", "report", "report_text"}
        probs = bundle.scores(["turn on the lights", "play some music please", "will it rain"])
        assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert report["accuracy_drop"] <= report["max_accuracy_drop"] + 1e-9
        assert report["attempts"][-1]["accepted"] and report["chosen"] == report["attempts"][-1]["step"]
        assert report["fp32"]["latency"]["p50_ms"] > 0 and report["bundle_model"]["size_mb"] > 0
        assert (Path(report["bundle"]) / "REPORT.md").read_text().startswith(f"# edgeft bundle for {name}")


def test_quantized_bundle_is_smaller_and_accurate(bundles):
    report = bundles["x86-64-avx512-vnni"]
    assert report["chosen"] == "the profile's recipe"
    assert report["size_ratio"] < 0.6  # int8 weights (embeddings included) on a tiny model
    assert report["bundle_model"]["metrics"]["accuracy"] >= report["fp32"]["metrics"]["accuracy"] - 0.01
    # 30 validation examples cannot resolve a 1-point tolerance: all 90 training examples join the check
    assert report["validation_examples"] == 30 and report["guard_training_examples"] == 90
    model = onnx.load(str(Path(report["bundle"]) / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "EmbedLayerNormalization" not in ops and {"MatMulInteger", "QAttention"} <= ops
    int8_tables = [i for i in model.graph.initializer if i.name.endswith("_int8") and i.data_type == onnx.TensorProto.INT8]
    assert int8_tables and not [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                                and n.input[0] in {t.name for t in int8_tables}]  # rows dequantized on lookup


def test_tables_are_read_as_int8_rows_and_shared_tables_stay_fp32():
    """weight_only: a Gather table becomes int8 rows with a scale per row, dequantized per lookup;
    a table also read by a MatMul (tied weights) is left alone; ids outside the batch never load."""
    rng = np.random.default_rng(0)
    table, tied = rng.standard_normal((50, 8), dtype=np.float32), rng.standard_normal((50, 8), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"]), helper.make_node("Gather", ["tied", "ids"], ["t"]),
         helper.make_node("Transpose", ["tied"], ["tied_t"]), helper.make_node("MatMul", ["t", "tied_t"], ["logits"])],
        "g", [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, ["n", 8]),
         helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 50])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(tied, "tied")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    quantized, count = weight_only(model, 8, set(), matrices=False)
    onnx.checker.check_model(quantized)
    names = {i.name: i for i in quantized.graph.initializer}
    assert count == 1 and "tied" in names and names["table_int8"].data_type == onnx.TensorProto.INT8
    assert "DequantizeLinear" not in {n.op_type for n in quantized.graph.node}
    ids = np.array([3, 0, 49, 3], dtype=np.int64)
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    rows, logits = session.run(None, {"ids": ids})
    scale = np.abs(table).max(axis=1, keepdims=True) / 127
    assert np.allclose(rows, (np.round(table / scale) * scale)[ids], atol=1e-6)
    assert np.abs(rows - table[ids]).max() <= scale[ids].max() / 2 + 1e-6
    assert np.allclose(logits, tied[ids] @ tied.T, atol=1e-5)


def test_guard_sizes_and_pools_its_check():
    from edgeft.deployment.guard import examples_needed, pooled, quality_drop

    assert examples_needed("classification", 1.0) == 500 and examples_needed("classification", 2.5) == 200
    assert examples_needed("classification", 0.0) == 0 and examples_needed("regression", 1.0) == 0
    merged = pooled("classification", [({"accuracy": 0.9}, 80), ({"accuracy": 1.0}, 320)])
    assert merged["accuracy"] == pytest.approx(0.98)
    assert quality_drop("classification", {"accuracy": 0.98}, merged) == 0.0
    rmse = pooled("regression", [({"rmse": 1.0}, 1), ({"rmse": 3.0}, 1)])["rmse"]
    assert rmse == pytest.approx(np.sqrt(5.0))
    # points of accuracy lost; for regression the RMSE increase in percent of the fp32 RMSE, at any scale
    assert quality_drop("classification", {"accuracy": 0.9}, {"accuracy": 0.85}) == pytest.approx(5.0)
    assert quality_drop("classification", {"accuracy": 0.9}, {"accuracy": 0.95}) == pytest.approx(-5.0)
    for scale in (1e-3, 1.0, 1e3):
        assert quality_drop("regression", {"rmse": 2.0 * scale}, {"rmse": 2.1 * scale}) == pytest.approx(5.0)


@pytest.mark.parametrize("mode,fmt", [("static", "qdq"), ("static", "qoperator"), ("fp16", "qdq"), ("none", "qdq")])
def test_every_quantization_mode_deploys_a_fused_transformer(text_run, tmp_path, mode, fmt):
    """Static calibration works on the fused graph (its contrib ops get their shapes from ORT's
    symbolic inference); fp16 and none deploy too, from a user's own profile file."""
    shipped = (Path(__file__).resolve().parents[1] / "devices" / "x86-64-avx2.toml").read_text()
    lines = [f'mode = "{mode}"' if line.startswith("mode =") else f'format = "{fmt}"' if line.startswith("format =")
             else f'name = "my-{mode}-{fmt}"' if line.startswith("name =") else line for line in shipped.splitlines()]
    profile = tmp_path / f"my-{mode}-{fmt}.toml"
    profile.write_text("\n".join(lines) + "\n")
    report = deploy(DeployOptions(source=text_run, device=str(profile), output=tmp_path / "bundle", max_drop=100.0))
    first = report["attempts"][0]
    assert first["accepted"] and report["chosen"] == "the profile's recipe"
    assert {"static": f"static int8/uint8 {fmt}", "fp16": "fp16 weights", "none": ""}[mode] in " ".join(first["notes"])
    model = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    expected = {("static", "qdq"): "QuantizeLinear", ("static", "qoperator"): "QLinearMatMul",
                ("fp16", "qdq"): "Cast", ("none", "qdq"): "Attention"}[(mode, fmt)]
    assert expected in ops
    probs = Bundle(tmp_path / "bundle").scores(["turn on the lights", "will it rain"])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_accuracy_guard_falls_back_with_zero_tolerance(export_cache, tmp_path):
    from edgeft.deployment.guard import head_node_patterns, ladder
    from edgeft.deployment.inference_model import build_inference_model
    from edgeft.deployment.runtime import make_session
    from edgeft.devices import load_profile

    artifacts = export_cache(model="models:mlp", inputs=["x:float32:batch,8"], train="last:1", dropout=False).folder
    fp32, _ = build_inference_model(artifacts / "forward.onnx", {}, tmp_path / "fp32.onnx", False, None, None)
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    labels = make_session(fp32).run(None, {"x": x})[0].argmax(axis=1)  # fp32 is exactly right on these
    np.savez(tmp_path / "val.npz", x=x, labels=labels.astype(np.int64))
    report = deploy(DeployOptions(source=artifacts, device="stm32mp25", val=tmp_path / "val.npz", max_drop=0.0,
                                  output=tmp_path / "bundle"))
    assert report["fp32"]["metrics"]["accuracy"] == 1.0
    assert report["attempts"][0]["accepted"] is False and report["attempts"][0]["drop"] > 0
    assert len(report["attempts"]) >= 2 and report["accuracy_drop"] == 0.0
    assert report["chosen"] != "the profile's recipe"
    # the ladder's own order, each step rejected until the last (tests/test_guard.py pins the order itself)
    order = [why for why, _ in ladder(load_profile("stm32mp25").quantization, head_node_patterns(
        [t["name"] for t in json.loads((artifacts / "manifest.json").read_text())["trainable"]["tensors"]]))]
    assert [a["step"] for a in report["attempts"]] == order[: len(report["attempts"])]
    assert [a["accepted"] for a in report["attempts"]] == [False] * (len(report["attempts"]) - 1) + [True]
    # a bundle of a model that takes tensors predicts from .npz files (labels in them are ignored)
    out = subprocess.run([sys.executable, "-m", "edgeft", "predict", str(tmp_path / "bundle"), str(tmp_path / "val.npz"),
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 600 and rows[5]["input"] == f"{tmp_path / 'val.npz'}[5]"
    names = Bundle(tmp_path / "bundle").labels
    assert [names.index(row["label"]) for row in rows] == labels.tolist()  # the accepted recipe: exactly fp32's
    out = subprocess.run([sys.executable, "-m", "edgeft", "predict", str(tmp_path / "bundle"), "hello"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "not a .npz file" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_a_bundle_with_onnxruntime_alone(text_run, bundles):
    """`edgeft evaluate BUNDLE DATA` scores the quantized model itself: on the validation file it
    gives exactly the accuracy deploy's guard measured, and imports no host-side package."""
    report = bundles["raspberry-pi-5"]
    val_csv = text_run.parent / "val.csv"
    out = run_device_side(f"""
import json
from pathlib import Path
from edgeft.api import evaluate as evaluate_model
print(json.dumps(evaluate_model(Path({report["bundle"]!r}), Path({str(val_csv)!r})).record))
""")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["examples"] == 30 and result["checkpoint"] is None
    assert result["accuracy"] == pytest.approx(report["bundle_model"]["metrics"]["accuracy"], abs=1e-6)  # report: 6 digits
    cli = subprocess.run([sys.executable, "-m", "edgeft", "evaluate", report["bundle"], str(val_csv), "--checkpoint",
                          str(text_run)], capture_output=True, text=True)
    assert cli.returncode == 1 and "does not apply to a bundle" in cli.stderr


def test_tampered_bundle_is_refused(bundles, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(bundles["raspberry-pi-5"]["bundle"], folder)
    with open(folder / "model.onnx", "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0x10]))
    with pytest.raises(EdgeftError, match="model.onnx was modified"):
        Bundle(folder)
    out = subprocess.run([sys.executable, "-m", "edgeft", "predict", str(folder), "hello"], capture_output=True, text=True)
    assert out.returncode == 1 and "model.onnx was modified" in out.stderr and "Traceback" not in out.stderr


def test_weight_only_bundle_dequantizes_once_at_load(bundles, tmp_path):
    """The weight-only bundle records the session config that folds its DequantizeLinear nodes:
    with it the loaded graph computes with fp32 weights and no per-run dequantization."""
    folder = Path(bundles["stm32mp25"]["bundle"])
    bundle = Bundle(folder)
    assert bundle.manifest.data["session_config"] == {"session.disable_quant_qdq": "1"}
    assert Bundle(Path(bundles["x86-64-avx2"]["bundle"])).manifest.data["session_config"] == {}
    stored = onnx.load(str(folder / "model.onnx"))
    assert sum(n.op_type == "DequantizeLinear" for n in stored.graph.node) >= 4  # MatMul and attention weights
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "loaded.onnx")
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    assert not [n for n in onnx.load(str(tmp_path / "loaded.onnx")).graph.node if n.op_type == "DequantizeLinear"]


def test_bundle_session_config_is_checked(bundles, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(bundles["stm32mp25"]["bundle"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["session_config"] = {"session.load_model_format": "ORT"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeftError, match="session_config.*does not know"):
        Bundle(folder)


def test_newer_bundle_format_is_refused(bundles, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(bundles["raspberry-pi-5"]["bundle"], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeftError, match="newer than this edgeft reads"):
        Bundle(folder)


def test_unknown_profile_and_existing_output(text_run, bundles, tmp_path):
    with pytest.raises(EdgeftError, match="no-such-board"):
        deploy(DeployOptions(source=text_run, device="no-such-board", output=tmp_path / "b"))
    with pytest.raises(EdgeftError, match="already exists"):
        deploy(DeployOptions(source=text_run, device="raspberry-pi-5", output=Path(bundles["raspberry-pi-5"]["bundle"])))


def test_predict_and_bench_cli_run_without_heavy_packages(bundles):
    folder = bundles["x86-64-avx2"]["bundle"]
    out = run_device_side(cli_calls(["predict", folder, "turn on the lights", "play music", "--json"],
                                    ["bench", folder, "--batch", "1", "--batch", "4", "--iterations", "5", "--json"]))
    assert out.returncode == 0, out.stderr
    decoder = json.JSONDecoder()
    predictions, end = decoder.raw_decode(out.stdout)
    bench, _ = decoder.raw_decode(out.stdout[end:].lstrip())
    assert [p["input"] for p in predictions] == ["turn on the lights", "play music"]
    assert all(p["label"] in LABELS and 0 < p["top"][0]["score"] <= 1 for p in predictions)
    assert [row["batch"] for row in bench["latency"]] == [1, 4]
    assert bench["latency"][0]["p95_ms"] >= bench["latency"][0]["p50_ms"] > 0 and bench["peak_rss_mb"] > 0


def test_deploy_runs_without_heavy_packages(text_run, tmp_path):
    out = run_device_side(cli_calls(["deploy", str(text_run), "--device", "raspberry-pi-4", "-o", str(tmp_path / "b"),
                                     "--json"]))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device"] == "raspberry-pi-4"


def test_image_model_deploys_and_predicts_from_image_files(tiny_vit, export_cache, tmp_path):
    """An image classifier goes through deploy too: its bundle carries the preprocessor config and
    predicts from image files with onnxruntime alone."""
    artifacts = export_cache(model=str(tiny_vit), train="head", label_names=["dark", "bright"]).folder
    write_image_folder(tmp_path / "imgs")
    train(artifacts, DataOptions(train=tmp_path / "imgs"), tmp_path / "run",
          TrainConfig(epochs=8, batch_size=4, lr=1e-2, val_fraction=0.25), threads=1)
    report = deploy(DeployOptions(source=tmp_path / "run", device="raspberry-pi-5", output=tmp_path / "bundle"))
    bundle = Bundle(tmp_path / "bundle")
    assert "preprocessor_config" in bundle.manifest.data["files"] and report["bundle_model"]["size_mb"] > 0
    probs = bundle.scores([str(tmp_path / "imgs" / "dark" / "0.png"), str(tmp_path / "imgs" / "bright" / "0.png")])
    assert probs.argmax(axis=1).tolist() == [0, 1]
    out = subprocess.run([sys.executable, "-m", "edgeft", "predict", str(tmp_path / "bundle"),
                          str(tmp_path / "imgs" / "bright" / "3.png"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [p["label"] for p in json.loads(out.stdout)] == ["bright"]


def test_the_profiles_targets_size_checked_latency_reported(text_run, bundles, tmp_path):
    """A bundle over the profile's max_model_mb is refused (every recipe tried, as the accuracy
    guard tries them; nothing written); the latency target is reported against a host measurement,
    never enforced."""
    report = bundles["raspberry-pi-5"]
    assert report["targets"] == {"max_model_mb": 64, "size_mb": report["bundle_model"]["size_mb"], "within_size": True,
                                 "latency_ms_p50": 12.0, "measured_p50_ms": report["bundle_model"]["latency"]["p50_ms"],
                                 "latency_measured_on": "host", "latency_enforced": False}
    text = " ".join((Path(report["bundle"]) / "REPORT.md").read_text().split())
    assert "within the profile's 64 MB" in text and "against the profile's target of 12 ms" in text
    assert "measured on a host, not the device, so it is reported, not enforced" in text
    shipped = (Path(__file__).resolve().parents[1] / "devices" / "raspberry-pi-5.toml").read_text()
    assert "max_model_mb = 64" in shipped
    tight = tmp_path / "tight.toml"
    tight.write_text(shipped.replace("max_model_mb = 64", f"max_model_mb = {report['bundle_model']['size_mb'] / 10:.4f}"))
    with pytest.raises(EdgeftError, match="No recipe gives a model within the profile's size budget") as info:
        deploy(DeployOptions(source=text_run, device=str(tight), output=tmp_path / "bundle"))
    assert info.value.where == f"{tight}, targets.max_model_mb" and "no bundle was written" in info.value.hint
    assert not (tmp_path / "bundle").exists() and list(tmp_path.iterdir()) == [tight]


@pytest.fixture(scope="module")
def distilbert_artifacts(export_cache, tmp_path_factory) -> Path:
    """A tiny DistilBERT, whose fusion makes ONNX Runtime's transformer optimizer log warnings."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from conftest import _tokenizer

    folder = tmp_path_factory.mktemp("tiny-distilbert")
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=128, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=64)).save_pretrained(folder)
    _tokenizer(folder)
    return export_cache(model=str(folder), label_names=LABELS, train="last:1").folder


def test_deploy_shows_onnx_runtimes_warnings_only_with_verbose(distilbert_artifacts, tmp_path):
    val = write_csv(tmp_path / "val.csv", dataset(1, 4))
    args = ["deploy", str(distilbert_artifacts), "--val", str(val), "--device", "x86-64-avx2"]
    quiet = run_device_side(cli_calls([*args, "-o", str(tmp_path / "quiet")]))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and "Bundle written to" in quiet.stdout  # only edgeft's own lines, on stdout
    loud = run_device_side(cli_calls([*args, "-o", str(tmp_path / "loud"), "-v"]))
    assert loud.returncode == 0, loud.stderr
    assert "[W:onnxruntime" in loud.stderr  # ONNX Runtime's own warnings (their wording differs by release)


def test_deploy_puts_the_processs_logging_back(text_run, tmp_path):
    """Quieting ONNX Runtime's Python logs for a deploy does not change the logging of the process."""
    import logging

    logging.disable(logging.INFO)  # what the application had chosen
    try:
        deploy(DeployOptions(source=text_run, device="raspberry-pi-5", output=tmp_path / "bundle"))
        assert logging.root.manager.disable == logging.INFO
    finally:
        logging.disable(logging.NOTSET)
