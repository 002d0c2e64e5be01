"""Knowledge retention (``evaluate --reference``): how far fine-tuning moved a model's outputs on
texts unrelated to the task, measured against the exported model."""

from __future__ import annotations

import numpy as np
import pytest

from edgeft.errors import EdgeftError
from edgeft.evaluation.retention import retention
from test_train import LABELS, dataset, write_csv

REFERENCE = "a door\nthe timer is set\nwhat is it\nset an alarm for my kitchen\nit is warmer\n"


def test_the_measures_on_known_changes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8))
    same = retention("embedding", x, x * 3.0)  # a scale is no change to a cosine
    assert same["mean_cosine"] == pytest.approx(1.0) and same["similarity_correlation"] == pytest.approx(1.0)
    assert same["neighbour_kept"] == 1.0
    moved = retention("embedding", x, x + rng.standard_normal((20, 8)))
    assert moved["mean_cosine"] < 0.9 and moved["similarity_correlation"] < 0.9 and moved["min_cosine"] < moved["mean_cosine"]
    logits = rng.standard_normal((50, 3))
    assert retention("classification", logits, logits) == {"texts": 50, "top_label_kept": 1.0, "probability_shift": 0.0}
    flipped = retention("classification", logits, -logits)
    assert flipped["top_label_kept"] < 0.2 and flipped["probability_shift"] > 0.2
    assert retention("regression", logits, logits + 1.0)["mean_abs_change"] == pytest.approx(1.0)


def test_a_classifier_run_reports_retention_and_names_its_new_head(tiny_bert, export_cache, tmp_path):
    import edgeft

    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", dropout=False)
    data = write_csv(tmp_path / "train.csv", dataset(0, 10))
    run = edgeft.train(artifacts.folder, data, run_dir=tmp_path / "run", epochs=2, lr=3e-3, val_fraction=0)
    reference = tmp_path / "unrelated.txt"
    reference.write_text(REFERENCE)
    found = edgeft.evaluate(run, data, reference=reference).retention
    assert found["texts"] == 5 and 0.0 <= found["top_label_kept"] <= 1.0 and found["probability_shift"] > 0.0
    assert "newly initialised" in found["note"]  # the head's "before" is an untrained head
    assert edgeft.evaluate(artifacts.folder, data, reference=["a door", "it is warmer"]).retention[
        "probability_shift"] == 0.0
    bundle = edgeft.deploy(run, device="raspberry-pi-5", output=tmp_path / "bundle", val=data)
    with pytest.raises(EdgeftError, match="does not hold"):
        edgeft.evaluate(bundle, data, reference=reference)
    with pytest.raises(EdgeftError, match="does not exist"):
        edgeft.evaluate(run, data, reference=tmp_path / "missing.txt")
