"""Property-based fuzzing (hypothesis) of every file edgeft reads: CSV, TSV, JSONL, npz, image
folders, manifests and device profiles. No input may crash: each is read, or refused with an
EdgeftError naming the file, the place and what to do; a valid file of known content must be read
back exactly (see tests/reliability_fuzz.py).

CI tries EXAMPLES inputs per file type, with a seed that changes from run to run (printed at the
end of the run; ``EDGEFT_SEED=N`` repeats it); ``python tools/reliability.py`` tries thousands.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from edgeft.errors import EdgeftError
from reliability_fuzz import FILE_TYPES, DataTarget, ManifestTarget, ProfileTarget, png_header, run_fuzz, run_seed
from test_train import LABELS, dataset, write_csv

EXAMPLES = int(os.environ.get("EDGEFT_FUZZ_EXAMPLES", "100"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_target(tmp_path_factory) -> DataTarget:
    return DataTarget(tmp_path_factory.mktemp("fuzz-data"))


@pytest.fixture(scope="module")
def manifest_target(tiny_bert, export_cache, tmp_path_factory) -> ManifestTarget:
    from edgeft.deployment.pipeline import DeployOptions, deploy

    root = tmp_path_factory.mktemp("fuzz-manifests")
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder
    val = write_csv(root / "val.csv", dataset(1, 4))
    bundle = deploy(DeployOptions(source=artifacts, device="raspberry-pi-5", val=val, output=root / "bundle"))["bundle"]
    return ManifestTarget(root / "work", artifacts, Path(bundle), val)


def _reached_both_sides(tally, kind: str) -> None:
    """The generator reached the error paths and the valid files alike (known content read back)."""
    assert tally.counts["refused"] > 0, (kind, tally.counts)
    assert tally.counts["verified"] > 0, (kind, tally.counts)


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "npz", "images"])
def test_data_files_never_crash_and_valid_ones_read_back_exactly(data_target, kind):
    tally = run_fuzz(data_target, kind, EXAMPLES, seed=run_seed(), stop_on_problem=True)
    assert tally.tried >= EXAMPLES * 0.9
    _reached_both_sides(tally, kind)


def test_manifests_never_crash_and_reformatted_ones_give_the_same_model(manifest_target):
    tally = run_fuzz(manifest_target, "manifests", EXAMPLES, seed=run_seed(), stop_on_problem=True)
    _reached_both_sides(tally, "manifests")


def test_device_profiles_never_crash_and_valid_ones_read_back_exactly(tmp_path_factory):
    target = ProfileTarget(tmp_path_factory.mktemp("fuzz-profiles"), REPO / "devices" / "raspberry-pi-5.toml")
    tally = run_fuzz(target, "profiles", EXAMPLES, seed=run_seed(), stop_on_problem=True)
    _reached_both_sides(tally, "profiles")


def test_images_at_the_decompression_bomb_limits_are_refused_naming_the_file(tmp_path):
    """Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; either way edgeft gives one
    clear error for a file that claims that many pixels, without decoding (or allocating) them."""
    from PIL import Image

    from edgeft.data.records import read_records
    from edgeft.data.examples import ExampleSet
    from edgeft.manifest import Manifest
    from test_data import manifest, write_tokenizer

    limit = Image.MAX_IMAGE_PIXELS
    data = manifest(modality="image")
    # just under the limit in one line (here too large for the decoder's memory), just over it, twice it, far beyond
    for width, height in ((limit - 1, 1), (-(-limit // 10_000), 10_000), (-(-2 * limit // 10_000), 10_000),
                          (2**31 - 1, 2**20)):
        root = tmp_path / f"{width}x{height}"
        (root / "music").mkdir(parents=True)
        path = root / "music" / "big.png"
        path.write_bytes(png_header(width, height))
        records = read_records(root, data)
        assert len(records) == 1
        with pytest.warns() if limit < width * height <= 2 * limit else contextlib.nullcontext():
            with pytest.raises(EdgeftError) as info:
                ExampleSet(records, Manifest(folder=write_tokenizer(tmp_path / "tok"), data=data))
        assert str(path) in info.value.message() and info.value.hint
        if width * height > 2 * limit:
            assert "decompression bomb" in str(info.value)
    small = tmp_path / "small" / "music"
    small.mkdir(parents=True)
    Image.fromarray(np.full((2, 3, 3), 200, np.uint8)).save(small / "ok.png")
    read = ExampleSet(read_records(small.parent, data), Manifest(folder=tmp_path / "tok", data=data))
    assert read.inputs(np.arange(1))["pixel_values"].shape == (1, 3, 2, 3)


def test_every_data_format_the_reader_takes_is_fuzzed():
    """A format added to the reader without a fuzzer for it fails here."""
    from edgeft.data.records import IMAGE_SUFFIXES, TEXT_SUFFIXES

    fuzzed = {f".{kind}" for kind in FILE_TYPES}
    assert set(TEXT_SUFFIXES) | {".npz"} <= fuzzed and "images" in FILE_TYPES
    from reliability_fuzz import IMAGE_NAMES

    assert set(IMAGE_SUFFIXES) <= {suffix.lower() for suffix in IMAGE_NAMES}  # every image suffix it reads
