"""Runs refer to their artifacts and data relative to themselves: they work copied elsewhere, from anywhere."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeft.errors import EdgeftError
from edgeft.run import checkpoints
from edgeft.training.loop import DataOptions, TrainConfig, train
from test_train import LABELS, dataset, write_csv

CONFIG = TrainConfig(epochs=2, batch_size=8, lr=3e-3, seed=0, checkpoint_every=3, keep=10)


@pytest.fixture()
def project(tiny_bert, export_cache, tmp_path, monkeypatch):
    """A project folder with artifacts, data and a run trained from it with relative paths."""
    root = tmp_path / "project"
    shutil.copytree(export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder,
                    root / "artifacts" / "tiny")
    (root / "data").mkdir()
    write_csv(root / "data" / "train.csv", dataset(0, 12))
    write_csv(root / "data" / "val.csv", dataset(1, 4))
    monkeypatch.chdir(root)
    train("artifacts/tiny", DataOptions(train="data/train.csv", val="data/val.csv"), "runs/a", CONFIG, threads=1)
    return root


def test_run_record_holds_paths_relative_to_the_run_and_data_hashes(project):
    record = json.loads((project / "runs" / "a" / "run.json").read_text())
    assert record["artifacts"]["path"] == "../../artifacts/tiny"
    assert record["data"]["train"]["path"] == "../../data/train.csv" and len(record["data"]["train"]["sha256"]) == 64
    assert not any(str(project) in json.dumps(v) for k, v in record.items() if k not in ("artifacts", "data"))


def test_a_copied_run_evaluates_deploys_and_resumes_from_another_directory(project, tmp_path, monkeypatch):
    from edgeft.deployment.pipeline import DeployOptions, deploy
    from edgeft.api import evaluate as evaluate_model

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(project, moved)
    shutil.rmtree(project)  # the recorded absolute paths are gone: only the relative ones can work
    monkeypatch.chdir(tmp_path)
    run = moved / "runs" / "a"
    result = evaluate_model(run, moved / "data" / "val.csv").record
    assert result["examples"] == 12 and result["checkpoint"].startswith(str(run))
    report = deploy(DeployOptions(source=run, device="x86-64-avx2", output=tmp_path / "bundle", max_drop=100))
    assert report["validation_examples"] == 12  # the run's own validation data, found next to the run
    # resume from the checkpoint before the last, with the data given by its absolute path
    saved = checkpoints.listed(run)
    expected = (saved[-1] / checkpoints.STATE_NPZ).read_bytes()
    for folder in saved[-2:]:
        shutil.rmtree(folder)
    shutil.rmtree(run / checkpoints.BEST)
    summary = train(str(moved / "artifacts" / "tiny"), DataOptions(train=str((moved / "data" / "train.csv").resolve()),
                    val=str(moved / "data" / "val.csv")), str(run), CONFIG, threads=1, resume=True)
    assert summary["steps"] == 10  # 36 examples, batches of 8, 2 epochs
    assert (checkpoints.listed(run)[-1] / checkpoints.STATE_NPZ).read_bytes() == expected


def test_resume_refuses_changed_data_even_under_the_same_name(project):
    rows = dataset(0, 12)
    rows[0] = ("play some music please", "music")
    write_csv(project / "data" / "train.csv", rows)
    with pytest.raises(EdgeftError, match="another training data"):
        train("artifacts/tiny", DataOptions(train="data/train.csv", val="data/val.csv"), "runs/a", CONFIG,
              threads=1, resume=True)


def test_deploy_says_when_the_runs_data_is_gone(project, tmp_path):
    from edgeft.deployment.pipeline import DeployOptions, deploy

    (project / "data" / "val.csv").unlink()
    with pytest.raises(EdgeftError, match="validation data is not where it was") as info:
        deploy(DeployOptions(source=project / "runs" / "a", device="x86-64-avx2", output=tmp_path / "b"))
    assert "--val" in info.value.hint
    np.testing.assert_equal(len(list((project / "runs" / "a").iterdir())) > 0, True)
