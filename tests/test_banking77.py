"""Real data: BANKING77 (online-banking queries, 77 intents), when it is on this machine.

The data lives outside the repository, in ``../shared/data/banking77`` (or ``$EDGEFT_BANKING77``);
without it these tests skip. They stay cheap: a seeded sample of a few intents, the MiniLM head
trained on ten queries per intent, checked on twenty test queries of each.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

from edgeft.api import evaluate as evaluate_model
from edgeft.training.loop import DataOptions, TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEFT_BANKING77") or REPO.parent / "shared" / "data" / "banking77")
INTENTS, PER_INTENT, TEST_PER_INTENT = 12, 10, 20

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DATA / "train.csv").is_file(),
                                 reason=f"BANKING77 is not in {DATA} (set EDGEFT_BANKING77 to its folder)")]


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / f"{name}.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows({"text": row["text"], "category": row["category"]} for row in rows)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[list[str], Path, Path]:
    """A seeded choice of intents, and seeded samples of their training and test queries."""
    rng = random.Random(0)
    intents = sorted(rng.sample(json.loads((DATA / "categories.json").read_text(encoding="utf-8")), INTENTS))
    train_rows = [row for row in _rows("train") if row["category"] in intents and row["text"].strip()]
    rng.shuffle(train_rows)
    test_rows = [row for row in _rows("test") if row["category"] in intents]
    rng.shuffle(test_rows)

    def per_intent(rows: list[dict[str, str]], count: int) -> list[dict[str, str]]:
        return [row for intent in intents for row in [r for r in rows if r["category"] == intent][:count]]

    chosen, test_rows = per_intent(train_rows, PER_INTENT), per_intent(test_rows, TEST_PER_INTENT)
    root = tmp_path_factory.mktemp("banking77")
    return intents, _write(root / "train.csv", chosen), _write(root / "test.csv", test_rows)


def test_the_head_learns_banking_intents_from_ten_queries_each(sample, export_cache, tmp_path):
    intents, train_csv, test_csv = sample
    artifacts = export_cache(label_names=intents, train="head").folder  # the built-in MiniLM
    before = evaluate_model(artifacts, test_csv, label_column="category", threads=2).record
    summary = train(artifacts, DataOptions(train=train_csv, label_column="category"), tmp_path / "run",
                    TrainConfig(epochs=30, batch_size=16, lr=1e-2, val_fraction=0, seed=0), threads=2)
    after = evaluate_model(tmp_path / "run", test_csv, label_column="category", threads=2).record
    assert summary["train_examples"] == INTENTS * PER_INTENT
    assert after["examples"] == before["examples"] == INTENTS * TEST_PER_INTENT
    assert before["accuracy"] <= 0.3  # a new head: about chance
    assert after["accuracy"] >= 0.75
