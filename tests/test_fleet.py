"""Federated fine-tuning on Flower: partitions, payloads, a device's round, and whole federations.

The federations are real: Flower's simulation engine (Ray) with edgeft's ServerApp and ClientApp,
and (tests/test_fleet_deployment.py) a SuperLink and SuperNodes as separate processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr", reason="the fleet extra (Flower) is not installed")

from edgeft.errors import EdgeftError  # noqa: E402
from edgeft.fleet import payload  # noqa: E402
from edgeft.fleet.local import LocalSettings, local_update, open_artifacts, trainable_names  # noqa: E402
from edgeft.fleet.partition import partition  # noqa: E402
from edgeft.fleet.settings import FleetSettings  # noqa: E402
from edgeft.fleet.simulate import simulate  # noqa: E402
from edgeft.evaluation.evaluate import checkpoint_parameters  # noqa: E402
from test_train import LABELS, dataset, held_out_rows, write_csv  # noqa: E402


@pytest.fixture(scope="module")
def fleet_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("fleet-data")
    return write_csv(root / "train.csv", dataset(0, 30)), write_csv(root / "held_out.csv", held_out_rows())


@pytest.fixture(scope="module")
def artifacts(tiny_bert, export_cache) -> Path:
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", dropout=False).folder


def settings_for(artifacts: Path, val: Path, run_dir: Path, **changes) -> FleetSettings:
    base = FleetSettings(artifacts=str(artifacts), val=str(val), run_dir=str(run_dir), rounds=4, lr=1e-2,
                         local_epochs=3, seed=0)
    return replace(base, **changes)


# --- partitions -------------------------------------------------------------------------------

def test_iid_and_dirichlet_partitions_deal_every_example_once():
    labels = np.repeat(np.arange(5), 40)
    for scheme in ("iid", "dirichlet"):
        parts = partition(labels, 8, scheme, alpha=0.5, seed=3)
        dealt = np.concatenate(parts.indices)
        assert sorted(dealt.tolist()) == list(range(len(labels))), scheme
        assert min(parts.sizes()) >= 2
        assert partition(labels, 8, scheme, alpha=0.5, seed=3).indices[0].tolist() == parts.indices[0].tolist()
    assert max(partition(labels, 8, "iid").sizes()) - min(partition(labels, 8, "iid").sizes()) <= 1


def test_a_small_dirichlet_concentration_gives_each_device_fewer_labels():
    labels = np.repeat(np.arange(10), 50)

    def labels_per_device(alpha: float) -> float:
        parts = partition(labels, 10, "dirichlet", alpha=alpha, seed=1)
        return float(np.mean([(np.bincount(labels[p], minlength=10) > 0).sum() for p in parts.indices]))

    assert labels_per_device(0.1) < labels_per_device(1.0) < labels_per_device(1000.0)
    assert labels_per_device(1000.0) == 10


def test_impossible_partitions_are_refused_by_name():
    with pytest.raises(EdgeftError, match="cannot give 50 devices"):
        partition(np.zeros(20, dtype=int), 50)
    with pytest.raises(EdgeftError, match="not positive"):
        partition(np.zeros(20, dtype=int), 2, "dirichlet", alpha=0)


# --- payloads ---------------------------------------------------------------------------------

def test_update_encodings_round_trip_within_their_precision_at_their_size():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(64, 32)).astype(np.float32), rng.normal(size=(32,)).astype(np.float32),
             np.zeros((3,), np.float32)]
    new = [s + rng.normal(scale=1e-3, size=s.shape).astype(np.float32) for s in start]
    new[2] = start[2].copy()  # a tensor that did not move: scale 0
    full = payload.nbytes(payload.encode(new, start, "fp32"))
    for encoding, share, tolerance in (("fp32", 1.0, 0.0), ("fp16", 0.5, 1e-6), ("int8", 0.26, 4.1e-3 / 127 / 2)):
        sent = payload.encode(new, start, encoding)
        back = payload.decode(sent, start, encoding)
        assert payload.nbytes(sent) <= share * full + 16, encoding
        for a, b in zip(back, new):
            assert np.max(np.abs(a - b)) <= tolerance + 1e-7, encoding


# --- one device's round -----------------------------------------------------------------------

def test_a_devices_round_starts_from_the_global_tensors(artifacts, fleet_data):
    manifest = open_artifacts(artifacts)
    names = trainable_names(manifest)
    exported = checkpoint_parameters(manifest.path("portable_checkpoint"))
    start = [exported[name] for name in names]
    moved = [value + 0.5 if value.ndim == 2 else value for value in start]  # a global model far from the export
    settings = LocalSettings(epochs=1, lr=1e-4)
    from_export, examples, metrics = local_update(artifacts, fleet_data[0], start, settings)
    from_moved, _, _ = local_update(artifacts, fleet_data[0], moved, settings)
    assert examples == 90 and metrics["steps"] == 6 and metrics["train_loss"] > 0
    weight = next(i for i, value in enumerate(start) if value.ndim == 2)
    # a small learning rate: each result stays next to where its round started
    assert np.abs(from_moved[weight] - moved[weight]).max() < 0.05
    assert np.abs(from_export[weight] - start[weight]).max() < 0.05
    assert not np.allclose(from_export[weight], start[weight])


# --- settings ---------------------------------------------------------------------------------

def test_settings_from_a_run_config_are_typed_and_checked():
    settings = FleetSettings.from_run_config({"rounds": "7", "lr": 0.5, "secagg": "true", "run-dir": "x"})
    assert (settings.rounds, settings.lr, settings.secagg, settings.run_dir) == (7, 0.5, True, "x")
    assert FleetSettings.from_run_config(settings.run_config()) == settings
    with pytest.raises(EdgeftError, match="Unknown fleet setting 'round'"):
        FleetSettings.from_run_config({"round": 3})
    with pytest.raises(EdgeftError, match="proximal term"):
        FleetSettings(strategy="fedprox")
    with pytest.raises(EdgeftError, match="cannot be combined with secure aggregation"):
        FleetSettings(encoding="int8", secagg=True)


# --- federations (Flower's simulation engine) -------------------------------------------------

@pytest.fixture(scope="module")
def federation(artifacts, fleet_data, tmp_path_factory):
    """One plain FedAvg federation of 4 non-IID devices, shared by the tests that read its results."""
    import logging
    import os

    run_dir = tmp_path_factory.mktemp("fleet") / "run"
    environment, level = dict(os.environ), logging.getLogger("flwr").level
    result = simulate(settings_for(artifacts, fleet_data[1], run_dir), fleet_data[0], 4, "dirichlet", 0.5)
    # Flower's Ray backend rewrites PYTHONPATH for its workers: the process must get its own back
    assert dict(os.environ) == environment and logging.getLogger("flwr").level == level
    return result


def test_a_simulated_federation_improves_the_global_model(federation, artifacts):
    history = federation.history
    assert [entry["round"] for entry in history] == [0, 1, 2, 3, 4]
    before, best = history[0]["val"]["accuracy"], federation.summary["best"]["accuracy"]
    assert best >= before + 0.3, (before, best)
    tail = sum(np.asarray(v).nbytes for v in checkpoint_parameters(open_artifacts(artifacts)
                                                                   .path("portable_checkpoint")).values())
    assert all(entry["bytes_sent_per_client"] == tail and entry["clients"] == 4 and entry["failures"] == 0
               for entry in history[1:])
    assert federation.summary["bytes_per_client_per_round"] == {"sent": tail, "received": tail}
    assert (federation.run_dir / "accuracy.png").stat().st_size > 10_000
    partition_record = json.loads((federation.run_dir / "partition.json").read_text())
    assert sum(partition_record["sizes"]) == 90 and len(partition_record["label_counts"]) == 4


def test_a_federated_run_evaluates_and_deploys_like_any_run(federation, fleet_data, tmp_path):
    import edgeft

    metrics = edgeft.evaluate(str(federation.run_dir), str(fleet_data[1]))
    assert metrics.accuracy == pytest.approx(federation.summary["best"]["accuracy"])
    bundle = edgeft.deploy(str(federation.run_dir), device="x86-64-avx2", output=str(tmp_path / "bundle"))
    assert edgeft.evaluate(bundle, str(fleet_data[1])).accuracy >= metrics.accuracy - 0.1
    assert bundle.predict(["play the music"])[0].label in LABELS


def test_int8_updates_send_a_quarter_of_the_bytes_and_still_learn(artifacts, fleet_data, federation, tmp_path):
    result = simulate(settings_for(artifacts, fleet_data[1], tmp_path / "run", encoding="int8"), fleet_data[0], 4,
                      "dirichlet", 0.5, plot=False)
    sent = result.summary["bytes_per_client_per_round"]["sent"]
    assert sent <= 0.26 * federation.summary["bytes_per_client_per_round"]["sent"]
    assert result.summary["best"]["accuracy"] >= result.history[0]["val"]["accuracy"] + 0.3


@pytest.fixture(scope="module")
def one_round(artifacts, fleet_data, tmp_path_factory) -> dict[str, np.ndarray]:
    """The global tensors after one plain FedAvg round (the baseline of SecAgg+ and DP)."""
    run_dir = tmp_path_factory.mktemp("one-round") / "run"
    simulate(settings_for(artifacts, fleet_data[1], run_dir, rounds=1), fleet_data[0], 4, "dirichlet", 0.5, plot=False)
    return checkpoint_parameters(run_dir / "checkpoints" / "step-00000001")


def exported(artifacts: Path) -> dict[str, np.ndarray]:
    return checkpoint_parameters(open_artifacts(artifacts).path("portable_checkpoint"))


def distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.sum((a[n] - b[n]) ** 2)) for n in a)))


def test_secure_aggregation_gives_the_plain_average(artifacts, fleet_data, one_round, tmp_path):
    """SecAgg+ hides each device's tensors from the server; the round's global model must be the
    plain weighted average all the same (to SecAgg+'s quantization step)."""
    result = simulate(settings_for(artifacts, fleet_data[1], tmp_path / "run", secagg=True, rounds=1),
                      fleet_data[0], 4, "dirichlet", 0.5, plot=False)
    assert result.summary["secagg"] is True
    assert result.history[1]["clients"] == 4 and "train_loss" not in result.history[1]  # no per-device figures
    secure = checkpoint_parameters(tmp_path / "run" / "checkpoints" / "step-00000001")
    for name, plain in one_round.items():
        assert np.abs(plain - secure[name]).max() < 2e-4, name
    assert max(np.abs(one_round[n] - exported(artifacts)[n]).max() for n in one_round) > 1e-2  # the round moved them


def test_client_side_clipping_bounds_the_rounds_move_and_reports_the_budget(artifacts, fleet_data, one_round,
                                                                             tmp_path):
    """With differential privacy a round moves the global tensors no further than the clip (the
    average of clipped updates, plus noise), where the same round without it moves them further."""
    clip = 0.05
    result = simulate(settings_for(artifacts, fleet_data[1], tmp_path / "run", dp_noise=1e-3, dp_clip=clip,
                                   rounds=1), fleet_data[0], 4, "iid", plot=False)
    start = exported(artifacts)
    moved = distance(checkpoint_parameters(tmp_path / "run" / "checkpoints" / "step-00000001"), start)
    assert distance(one_round, start) > 3 * clip  # unclipped, the round goes further
    assert 0 < moved <= clip * 1.05
    dp = result.summary["dp"]
    assert dp["releases"] == 1 and dp["epsilon"] > 0 and dp["noise_multiplier"] == 1e-3
    assert "train_loss" not in result.history[1]


def test_the_privacy_budget_grows_with_rounds_and_shrinks_with_noise():
    pytest.importorskip("dp_accounting", reason="Flower's privacy accountant needs dp-accounting")
    from edgeft.fleet.server_app import privacy_spent

    def epsilon(noise: float, rounds: int) -> float:
        history = [{"round": 0}] + [{"round": r, "clients": 10} for r in range(1, rounds + 1)]
        spent = privacy_spent(FleetSettings(dp_noise=noise, min_available_clients=100), history)
        assert spent["releases"] == rounds and spent["delta"] == 1e-5
        return spent["epsilon"]

    assert 0 < epsilon(2.0, 10) < epsilon(1.0, 10) < epsilon(1.0, 20) < float("inf")


def test_bad_data_is_refused_before_any_device_starts(artifacts, fleet_data, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,not-a-label\n" * 20)
    with pytest.raises(EdgeftError, match="unknown label 'not-a-label'"):
        simulate(settings_for(artifacts, fleet_data[1], tmp_path / "run", rounds=1), bad, 2, "iid", plot=False)
    assert not (tmp_path / "run").exists()


def test_the_servers_strategy_refuses_rounds_it_must_not_aggregate(artifacts, fleet_data):
    """The strategy as built (DP around FedAvg, edgeft's checks outermost): no reply at all stops
    the federation with the devices' reason; a non-finite update counts as a failure."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    from edgeft.fleet.global_model import GlobalModel
    from edgeft.fleet.server_app import Recorder, build_strategy

    model = GlobalModel(artifacts, fleet_data[1])
    try:
        initial = model.initial()
        for dp_noise in (0.0, 0.5):
            settings = FleetSettings(artifacts=str(artifacts), dp_noise=dp_noise, min_train_clients=1)
            recorder = Recorder(model)
            strategy = build_strategy(settings, recorder, initial, model.fingerprint())
            with pytest.raises(EdgeftError, match="none of the 2 devices") as error:
                strategy.aggregate_fit(3, [], [RuntimeError("data.csv:2: unknown label 'x'"), OSError("disk full")])
            assert "unknown label 'x'" in error.value.hint
            poisoned = [np.full_like(t, np.nan) for t in initial]
            reply = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(poisoned), 10, {})
            strategy.configure_fit(1, ndarrays_to_parameters(initial), _Devices())
            with pytest.raises(EdgeftError, match="none of the 1 devices") as error:
                strategy.aggregate_fit(1, [(None, reply)], [])
            assert "NaN" in error.value.hint
    finally:
        model.close()


class _Devices:
    """A client manager with nobody connected (configure_fit then asks no device)."""

    def num_available(self) -> int:
        return 0

    def wait_for(self, num_clients: int, timeout: int = 0) -> bool:
        return False

    def sample(self, num_clients: int, min_num_clients: int | None = None, criterion=None) -> list:
        return []


def test_a_device_refuses_a_model_its_package_does_not_train(artifacts, fleet_data):
    from edgeft.fleet.client_app import EdgeftClient

    from edgeft.fleet.server_app import Recorder, build_strategy

    tensors = list(exported(artifacts).values())
    strategy = build_strategy(FleetSettings(artifacts=str(artifacts)), Recorder(None), tensors, "0" * 16)  # type: ignore
    config = strategy.inner.on_fit_config_fn(1)  # what the server sends with a round, another model's fingerprint
    for sent in (tensors[:-1], tensors):
        with pytest.raises(EdgeftError, match="trains other tensors"):
            EdgeftClient(artifacts, fleet_data[0]).fit(sent, config)


def test_a_taken_run_folder_is_refused_before_any_device_trains(federation, artifacts, fleet_data):
    import time

    started = time.perf_counter()
    with pytest.raises(EdgeftError, match="already exists"):
        simulate(settings_for(artifacts, fleet_data[1], federation.run_dir), fleet_data[0], 4)
    assert time.perf_counter() - started < 5  # refused up front: no simulation engine started


def test_settings_that_cannot_work_are_refused_by_name():
    with pytest.raises(EdgeftError, match="no round could ever"):
        FleetSettings(min_train_clients=3, min_available_clients=2)
    with pytest.raises(EdgeftError, match="privacy budget it does not have"):
        FleetSettings(dp_noise=0.5, strategy="fedadam")
    with pytest.raises(EdgeftError, match="secure aggregation hides"):
        FleetSettings(secagg=True, strategy="krum")
    with pytest.raises(EdgeftError, match="not an int"):
        FleetSettings.from_run_config({"rounds": 2.5})
    with pytest.raises(EdgeftError, match="not a bool"):
        FleetSettings.from_run_config({"secagg": "ture"})


def test_fleet_cli_simulates_with_pure_json_and_writes_an_app(artifacts, fleet_data, tmp_path):
    renamed = []  # data with the columns named otherwise: the devices' files must be read the same way
    for path in fleet_data:
        lines = path.read_text().splitlines()
        renamed.append(tmp_path / path.name)
        renamed[-1].write_text("\n".join(["utterance,intent", *lines[1:]]) + "\n")
    args = ["fleet", "simulate", str(artifacts), str(renamed[0]), "--val", str(renamed[1]), "--clients", "2",
            "--rounds", "1", "--run-dir", str(tmp_path / "run"), "--no-plot", "--json", "--text-column", "utterance",
            "--label-column", "intent"]
    done = subprocess.run([sys.executable, "-m", "edgeft", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [e["round"] for e in printed["history"]] == [0, 1] and printed["summary"]["federated"]
    assert printed["history"][1]["clients"] == 2 and printed["history"][1]["failures"] == 0

    app = tmp_path / "app"
    from edgeft.cli import main

    main(["fleet", "app", str(app), str(artifacts), "--val", str(fleet_data[1]), "--min-clients", "3",
          "--min-train-clients", "2", "--rounds", "3"])
    import tomllib

    config = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert config["components"] == {"serverapp": "edgeft.fleet.server_app:app",
                                    "clientapp": "edgeft.fleet.client_app:app"}
    assert FleetSettings.from_run_config(config["config"]).min_train_clients == 2
    sim = tmp_path / "sim-app"
    (tmp_path / "sim-app-devices").mkdir()
    (tmp_path / "sim-app-devices" / "device-0000.jsonl").write_text("mine\n")
    app_args = ["fleet", "app", str(sim), str(artifacts), "--val", str(fleet_data[1]), "--simulate", str(fleet_data[0]),
                "--clients", "3"]
    with pytest.raises(SystemExit) as refused:
        main(app_args + ["--force"])  # a folder of the user's, even with --force
    assert refused.value.code == 1 and (tmp_path / "sim-app-devices" / "device-0000.jsonl").read_text() == "mine\n"
    (tmp_path / "sim-app-devices" / "device-0000.jsonl").unlink()
    (tmp_path / "sim-app-devices").rmdir()
    main(app_args)
    split = sorted(p.name for p in (tmp_path / "sim-app-devices").iterdir())
    assert split == [".edgeft-partition.json", "device-0000.jsonl", "device-0001.jsonl", "device-0002.jsonl"]
    assert not list(sim.glob("**/*.jsonl"))  # nothing in the app folder that Flower would ship to every node
    config = tomllib.loads((sim / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert config["partitions"] == str((tmp_path / "sim-app-devices").resolve()) and config["force"] is False
    main(app_args + ["--force"])  # edgeft's own split is replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    with pytest.raises(SystemExit) as refused:
        main(["fleet", "app", str(foreign), str(artifacts), "--val", str(fleet_data[1]), "--force"])
    assert refused.value.code == 1 and (foreign / "pyproject.toml").read_text() == "[project]\nname = 'mine'\n"
