"""``evaluate --by COLUMN``: the metrics of each slice of the data equal those of that slice alone,
and the worst slice is named."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import cli_calls, run_device_side
from test_train import LABELS, dataset, held_out_rows, write_csv


@pytest.fixture(scope="module")
def trained(tiny_bert, export_cache, tmp_path_factory):
    import edgeft

    root = tmp_path_factory.mktemp("by")
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", dropout=False).folder
    run = edgeft.train(artifacts, dataset(0, 30), run_dir=root / "run", epochs=6, batch_size=8, lr=3e-3, threads=1,
                       val_fraction=0)
    seen, unseen = dataset(0, 30)[:20], held_out_rows()
    with open(root / "mixed.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        writer.writerows([(t, l, "seen") for t, l in seen] + [(t, l, "held-out") for t, l in unseen] +
                         [("lights please now", "lights", "")])
    return root, run, write_csv(root / "seen.csv", seen), write_csv(root / "unseen.csv", unseen)


def test_each_slice_scores_as_it_would_alone_and_the_worst_is_named(trained):
    import edgeft

    root, run, seen, unseen = trained
    result = edgeft.evaluate(run, root / "mixed.csv", by="source")
    slices = {row["value"]: row for row in result.by["slices"]}
    assert set(slices) == {"seen", "held-out", ""} and result.examples == 51
    for name, alone in (("seen", seen), ("held-out", unseen)):
        expected = edgeft.evaluate(run, alone)
        assert slices[name]["examples"] == expected.examples
        assert slices[name]["accuracy"] == pytest.approx(expected.accuracy)
        assert slices[name]["macro_f1"] == pytest.approx(expected.macro_f1)
    assert result.by["metric"] == "accuracy"
    assert result.by["worst"] == min(slices, key=lambda v: slices[v]["accuracy"])
    assert slices["seen"]["accuracy"] > slices["held-out"]["accuracy"]  # measured: 1.0 and 0.9


def test_the_cli_prints_the_slices_and_json_carries_them(trained, tmp_path):
    root, run, _, _ = trained
    out = run_device_side(cli_calls(["evaluate", str(run.path), str(root / "mixed.csv"), "--by", "source"]))
    assert out.returncode == 0, out.stderr
    assert "By source (worst first)" in out.stdout and "worst slice: source = " in out.stdout
    as_json = run_device_side(cli_calls(["evaluate", str(run.path), str(root / "mixed.csv"), "--by", "source",
                                         "--json"]))
    assert {row["value"] for row in json.loads(as_json.stdout)["by"]["slices"]} == {"seen", "held-out", ""}


def test_by_names_a_missing_column_and_refuses_files_without_columns(trained):
    import edgeft

    root, run, seen, _ = trained
    with pytest.raises(edgeft.EdgeftError, match="no column 'speaker'") as caught:
        edgeft.evaluate(run, seen, by="speaker")
    assert "--by" in caught.value.hint
    from edgeft.data.records import read_column

    with pytest.raises(edgeft.EdgeftError, match="--by reads a column of a .csv, .tsv or .jsonl file"):
        read_column(root / "inputs.npz", "source")
    with pytest.raises(edgeft.EdgeftError, match="data given in memory"):
        edgeft.evaluate(run, [("lights on", "lights")], by="source")
