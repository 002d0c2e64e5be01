"""Property-based fuzzing (hypothesis) of every file edgeft reads: CSV, TSV, JSONL, npz, image
folders, manifests and device profiles. No input may crash: each is read, or refused with an
EdgeftError naming the file, the place and what to do (see tests/reliability_fuzz.py).

CI tries EXAMPLES inputs per file type; ``python tools/reliability.py`` tries thousands.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reliability_fuzz import FILE_TYPES, DataTarget, ManifestTarget, ProfileTarget, run_fuzz
from test_train import LABELS, dataset, write_csv

EXAMPLES = int(os.environ.get("EDGEFT_FUZZ_EXAMPLES", "100"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_target(tmp_path_factory) -> DataTarget:
    return DataTarget(tmp_path_factory.mktemp("fuzz-data"))


@pytest.fixture(scope="module")
def manifest_target(tiny_bert, export_cache, tmp_path_factory) -> ManifestTarget:
    from edgeft.deploy.pipeline import DeployOptions, deploy

    root = tmp_path_factory.mktemp("fuzz-manifests")
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder
    val = write_csv(root / "val.csv", dataset(1, 4))
    bundle = deploy(DeployOptions(source=artifacts, device="raspberry-pi-5", val=val, output=root / "bundle"))["bundle"]
    return ManifestTarget(root / "work", artifacts, Path(bundle), val)


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "npz", "images"])
def test_data_files_never_crash(data_target, kind):
    tally = run_fuzz(data_target, kind, EXAMPLES, stop_on_problem=True)
    assert tally.tried >= EXAMPLES * 0.9
    assert tally.counts["refused"] > 0  # the generator reaches the error paths


def test_manifests_never_crash(manifest_target):
    tally = run_fuzz(manifest_target, "manifests", EXAMPLES, stop_on_problem=True)
    assert tally.counts["refused"] > 0


def test_device_profiles_never_crash(tmp_path_factory):
    target = ProfileTarget(tmp_path_factory.mktemp("fuzz-profiles"), REPO / "devices" / "raspberry-pi-5.toml")
    tally = run_fuzz(target, "profiles", EXAMPLES, stop_on_problem=True)
    assert tally.counts["refused"] > 0


def test_every_file_type_is_fuzzed():
    assert set(FILE_TYPES) == {"csv", "tsv", "jsonl", "npz", "images", "manifests", "profiles"}
