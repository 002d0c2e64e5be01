"""Device packages: export --device, training on the quantized prefix, deploying from the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import cli_calls, run_device_side
from edgeft.errors import EdgeftError
from edgeft.manifest import load_manifest
from test_train import LABELS, dataset, write_csv


PROFILE_INT4 = """format_version = 1
name = "int4-board"
description = "a board whose profile stores weights in 4 bits"
[hardware]
arch = "arm64"
isa = ["neon"]
cores = 2
threads = 2
memory_mb = 512
storage_mb = 1024
[quantization]
mode = "weight-only"
format = "qoperator"
weight_type = "int4"
activation_type = "uint8"
per_channel = true
reduce_range = false
quantize_embeddings = true
op_types = []
exclude_nodes = []
calibration_examples = 16
[runtime]
graph_optimization = "all"
fuse_transformer = true
[targets]
max_accuracy_drop = 1.0
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("package-data")
    return write_csv(root / "train.csv", dataset(0, 30)), write_csv(root / "val.csv", dataset(1, 10))


@pytest.fixture(scope="module")
def package(tiny_bert, export_cache, data):
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", device="x86-64-avx2",
                        guard_data=data[0])


@pytest.fixture(scope="module")
def package_run(package, data, tmp_path_factory):
    from edgeft.training.loop import DataOptions, TrainConfig, train

    run = tmp_path_factory.mktemp("package-run") / "run"
    summary = train(package.folder, DataOptions(train=data[0], val=data[1]), run,
                    TrainConfig(epochs=4, batch_size=8, lr=3e-3), threads=1)
    return run, summary


def test_the_package_holds_what_the_device_needs_and_nothing_else(package, tiny_bert, export_cache):
    data = load_manifest(package.folder).data  # every hash verified
    assert data["kind"] == "package" and data["device"]["name"] == "x86-64-avx2"
    assert set(data["files"]) == {"prefix_model", "tail_portable_step", "tail_portable_eval", "portable_optimizer",
                                  "portable_checkpoint", "labels", "tokenizer", "profile"}
    prefix = onnx.load(str(package.folder / "prefix.onnx"))
    ops = {n.op_type for n in prefix.graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger", "DynamicQuantizeLinear"}, ops  # int8 as the profile says
    assert data["prefix"]["chosen"] == "the profile's recipe" and data["prefix"]["guard"]["checked"]
    assert data["prefix"]["guard"]["examples"] == 90 and data["prefix"]["attempts"][0]["accepted"]
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1")
    artifact_bytes = sum(e["bytes"] for e in artifacts.manifest.data["files"].values())
    package_bytes = sum(e["bytes"] for e in data["files"].values())
    assert package_bytes < 0.5 * artifact_bytes
    assert data["size"]["package_mb"] == pytest.approx(package_bytes / 2**20, abs=1e-3)


def test_without_guard_data_the_profiles_recipe_is_taken_and_the_package_says_so(tiny_bert, export_cache):
    result = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", device="raspberry-pi-5")
    guard = result.manifest.data["prefix"]["guard"]
    assert not guard["checked"] and "no guard data" in guard["note"]
    assert any("no guard data" in note for note in result.notes)


def _regression_guard(export_cache, folder: Path, noise: float):
    """A regression MLP and guard targets that are a linear function of its fp32 prefix features plus
    ``noise`` (relative): the probes fit them up to the noise, so how much a recipe disturbs the
    features shows in their RMSE."""
    import onnxruntime as ort

    from edgeft.data.records import read_records
    from edgeft.data.examples import ExampleSet

    manifest = export_cache(model="models:mlp4", inputs=["x:float32:batch,8"], train="last:1", loss="mse").manifest
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    features = ort.InferenceSession(str(manifest.path("prefix_model"))).run(None, {"x": x})[0]
    targets = features @ rng.standard_normal((features.shape[1], 4))
    targets += noise * targets.std() * rng.standard_normal(targets.shape)  # what no probe can explain
    np.savez(folder / "guard.npz", x=x, labels=targets.astype(np.float32))
    return manifest, ExampleSet(read_records(folder / "guard.npz", manifest.data), manifest)


@pytest.mark.parametrize("noise, chosen", [(0.1, "weight-only int8 (fp32 compute)"), (0.0, "no quantization (fp32)")])
def test_the_prefix_guard_walks_the_ladder_to_the_first_recipe_within_tolerance(export_cache, tmp_path, noise,
                                                                                 chosen):
    """With some noise in the targets, 4-bit weights cost about 15% of RMSE and 8-bit ones nothing:
    with a 5% tolerance the guard rejects int4 (also with the tables in fp32) and takes weight-only
    int8. With none, the probes fit exactly and any quantization shows: no quantized prefix holds,
    and it stays fp32, saying so."""
    from edgeft.devices import load_profile
    from edgeft.packaging.prefix import prepare_prefix

    manifest, guard = _regression_guard(export_cache, tmp_path, noise)
    (tmp_path / "int4.toml").write_text(PROFILE_INT4)
    prepared = prepare_prefix(manifest, load_profile(tmp_path / "int4.toml"), tmp_path, guard, max_drop=5.0)
    steps = [a["step"] for a in prepared.attempts]
    ladder = ["the profile's recipe", "embedding table kept in fp32", "weight-only int8 (fp32 compute)",
              "no quantization (fp32)"]
    assert steps == ladder[: ladder.index(chosen) + 1] and prepared.chosen == chosen
    assert [a["accepted"] for a in prepared.attempts] == [False] * (len(steps) - 1) + [True]
    assert prepared.attempts[0]["drop"] > 10  # int4: far outside
    if chosen.startswith("weight-only"):
        assert prepared.recipe.weight_type == "int8" and abs(prepared.attempts[-1]["drop"]) < 1
        assert prepared.session_config == {"session.disable_quant_qdq": "1"}
    else:
        assert prepared.recipe.mode == "none" and any("stays fp32" in note for note in prepared.notes)


def test_a_profile_recipe_within_tolerance_is_taken_first(export_cache, tmp_path):
    from edgeft.devices import load_profile
    from edgeft.packaging.prefix import prepare_prefix

    manifest, guard = _regression_guard(export_cache, tmp_path, 0.1)
    (tmp_path / "int8.toml").write_text(PROFILE_INT4.replace('weight_type = "int4"', 'weight_type = "int8"'))
    prepared = prepare_prefix(manifest, load_profile(tmp_path / "int8.toml"), tmp_path, guard, max_drop=5.0)
    assert [a["step"] for a in prepared.attempts] == ["the profile's recipe"] and prepared.guard["checked"]


def test_training_on_the_package_uses_its_quantized_prefix(package, package_run):
    run, summary = package_run
    assert summary["backend"] == "portable" and summary["cache"] and summary["artifact_set"] == "tail"
    assert summary["after"]["accuracy"] > summary["before"]["accuracy"]
    saved = sorted(p.name for p in (run / "best").iterdir())
    assert saved == ["sha256.json", "state.json", "trainable.npz"]


def test_deploy_from_the_package_reuses_its_prefix_and_matches_the_runs_evaluation(package, package_run, data,
                                                                                   tmp_path):
    from edgeft.deployment.bundle import Bundle
    from edgeft.deployment.pipeline import DeployOptions, deploy
    from edgeft.api import evaluate as evaluate_model

    run, _ = package_run
    report = deploy(DeployOptions(source=run, output=tmp_path / "bundle"))
    assert report["device"] == "x86-64-avx2" and report["package"]["prefix"] == "the profile's recipe"
    model = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    prefix = onnx.load(str(package.folder / "prefix.onnx"))
    prefix_weights = {i.name: i.raw_data for i in prefix.graph.initializer}
    assert all(prefix_weights[i.name] == i.raw_data for i in model.graph.initializer if i.name in prefix_weights)
    assert len(prefix_weights) > 10 and set(prefix_weights) <= {i.name for i in model.graph.initializer}
    on_val = evaluate_model(tmp_path / "bundle", data[1]).record
    trained = evaluate_model(run, data[1]).record
    assert abs(on_val["accuracy"] - trained["accuracy"]) <= 1 / 30 + 1e-9  # one flip at most on 30 examples
    assert report["bundle_model"]["metrics"]["accuracy"] == pytest.approx(on_val["accuracy"])
    scores = Bundle(tmp_path / "bundle").scores(["turn on the lights", "will it rain"])
    assert np.asarray(scores).shape == (2, len(LABELS))


def test_deploy_refuses_another_device_for_a_package_run(package_run, tmp_path):
    from edgeft.deployment.pipeline import DeployOptions, deploy

    with pytest.raises(EdgeftError, match="prepared for that profile") as info:
        deploy(DeployOptions(source=package_run[0], device="raspberry-pi-5", output=tmp_path / "b"))
    assert "export a package for raspberry-pi-5" in info.value.hint
    assert not (tmp_path / "b").exists()


def test_ort_training_and_device_cannot_be_combined(tiny_onnx, tmp_path):
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts

    with pytest.raises(EdgeftError) as info:
        export_artifacts(ExportOptions(model=str(tiny_onnx), output=tmp_path / "p", device="x86-64-avx2",
                                       formats=("portable", "ort-training")))
    assert "portable training graphs only" in info.value.what or "training API" in info.value.what


def test_train_evaluate_and_deploy_a_package_without_heavy_packages(package, data, tmp_path):
    run, bundle = str(tmp_path / "run"), str(tmp_path / "bundle")
    code = cli_calls(["train", str(package.folder), str(data[0]), "--val", str(data[1]), "--epochs", "1",
                      "--threads", "1", "--run-dir", run, "--json"],
                     ["deploy", run, "-o", bundle, "--json"],
                     ["predict", bundle, "turn on the lights", "--json"])
    out = run_device_side(code + "import sys\nprint('heavy', sorted(m for m in ('torch', 'transformers') "
                                 "if sys.modules.get(m)))\n")
    assert out.returncode == 0, out.stderr
    assert "heavy []" in out.stdout
    assert json.loads((tmp_path / "bundle" / "report.json").read_text())["package"]["name"] == package.manifest.data["name"]


def test_package_command_makes_a_package_from_artifacts_and_refuses_a_guard_without_a_device(tiny_bert, export_cache,
                                                                                            data, tmp_path):
    import subprocess
    import sys

    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder
    out = subprocess.run([sys.executable, "-m", "edgeft", "package", str(artifacts), "--device", "raspberry-pi-5",
                          "--guard-data", str(data[1]), "-o", str(tmp_path / "pkg"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["device"] == "raspberry-pi-5" and summary["prefix"]["guard"]["examples"] == 30
    assert load_manifest(tmp_path / "pkg").kind == "package"
    refused = subprocess.run([sys.executable, "-m", "edgeft", "export", str(tiny_bert), "--guard-data", str(data[1])],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "give --device too" in refused.stderr and "Traceback" not in refused.stderr
