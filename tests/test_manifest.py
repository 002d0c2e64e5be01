"""manifest.json: what write_manifest records (format version, size and sha256 of every file) and
what load_manifest refuses (changed, truncated or missing files, paths leaving the folder, newer
or absent format versions, the wrong kind), each as one EdgeftError that names the problem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgeft.errors import EdgeftError
from edgeft.manifest import FORMAT_VERSION, MANIFEST_NAME, load_manifest, verify_files, write_manifest

MODEL = b"\x08\x07onnx-model-bytes" * 50
DATA = bytes(range(256)) * 4
INFO = {"kind": "artifacts", "task": "text-classification", "labels": {"names": ["off", "on"]},
        "inputs": [{"name": "input_ids", "dtype": "int64"}]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    (root / "sub").mkdir(parents=True)
    (root / "model.onnx").write_bytes(MODEL)
    (root / "sub" / "data.bin").write_bytes(DATA)
    write_manifest(root, INFO, {"model": "model.onnx", "data": "sub/data.bin"}, check=False)  # the file table alone
    return root


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_write_manifest_records_version_size_and_sha256(folder):
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert FORMAT_VERSION == 1 and data["format_version"] == 1
    assert data["files"] == {
        "data": {"path": "sub/data.bin", "bytes": 1024, "sha256": hashlib.sha256(DATA).hexdigest()},
        "model": {"path": "model.onnx", "bytes": len(MODEL), "sha256": hashlib.sha256(MODEL).hexdigest()},
    }
    assert data["task"] == "text-classification" and data["labels"] == {"names": ["off", "on"]}
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_write_manifest_overrides_a_stale_version_and_keeps_the_input(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    info = {"kind": "bundle", "format_version": 99}
    written = write_manifest(tmp_path, info, {"a": "a.bin"}, check=False)
    assert written.data["format_version"] == FORMAT_VERSION
    assert info == {"kind": "bundle", "format_version": 99}
    assert (tmp_path / MANIFEST_NAME).read_text().endswith("}\n")


def test_load_round_trip(folder):
    manifest = load_manifest(str(folder), kind="artifacts")
    assert manifest.folder == folder
    assert (manifest.kind, manifest.task, manifest.label_names) == ("artifacts", "text-classification", ["off", "on"])
    assert manifest.inputs == INFO["inputs"]
    assert manifest.path("data") == folder / "sub" / "data.bin"
    assert verify_files(manifest) == []


def test_changed_byte_is_refused(folder):
    model = folder / "model.onnx"
    raw = bytearray(model.read_bytes())
    raw[10] ^= 0x01  # same size, different content
    model.write_bytes(bytes(raw))
    with pytest.raises(EdgeftError, match=r"model\.onnx was modified \(sha256 mismatch\)") as info:
        load_manifest(folder)
    assert info.value.where == str(folder)
    assert "copy it again" in info.value.hint


def test_truncated_file_is_refused(folder):
    (folder / "sub" / "data.bin").write_bytes(DATA[:-1])
    with pytest.raises(EdgeftError, match="sub/data.bin was modified"):
        load_manifest(folder)


def test_missing_files_are_all_named(folder):
    (folder / "model.onnx").unlink()
    (folder / "sub" / "data.bin").write_bytes(b"")
    with pytest.raises(EdgeftError, match="do not match its manifest") as info:
        load_manifest(folder)
    assert "model.onnx is missing" in info.value.what and "sub/data.bin was modified" in info.value.what
    assert verify_files(load_manifest(folder, verify=False)) == ["sub/data.bin was modified (sha256 mismatch)",
                                                                 "model.onnx is missing"]


@pytest.mark.parametrize("rel", ["../outside.bin", "sub/../../outside.bin"])
def test_path_leaving_the_folder_is_refused_even_without_verify(folder, rel):
    (folder.parent / "outside.bin").write_bytes(MODEL)
    edit_manifest(folder, lambda d: d["files"]["model"].update(path=rel))
    with pytest.raises(EdgeftError, match="points outside its folder") as info:
        load_manifest(folder, verify=False)
    assert rel in info.value.what
    assert info.value.where == str(folder / MANIFEST_NAME)


def test_symlink_leaving_the_folder_is_refused(folder):
    (folder.parent / "outside.bin").write_bytes(MODEL)
    (folder / "link.bin").symlink_to(folder.parent / "outside.bin")
    edit_manifest(folder, lambda d: d["files"]["model"].update(path="link.bin"))
    with pytest.raises(EdgeftError, match="'link.bin' points outside its folder"):
        load_manifest(folder, verify=False)


@pytest.mark.parametrize("rel", ["/etc/passwd", "", 7, None])
def test_invalid_path_is_refused(folder, rel):
    edit_manifest(folder, lambda d: d["files"]["model"].update(path=rel))
    with pytest.raises(EdgeftError, match="invalid file path"):
        load_manifest(folder, verify=False)


def test_newer_format_version_is_refused(folder):
    edit_manifest(folder, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(EdgeftError, match=r"manifest format 2, newer than this edgeft reads \(1\)") as info:
        load_manifest(folder)
    assert info.value.where == str(folder / MANIFEST_NAME)
    assert "upgrade edgeft" in info.value.hint


@pytest.mark.parametrize("version", ["1", True, 1.0, None])
def test_invalid_format_version_is_refused(folder, version):
    edit_manifest(folder, lambda d: d.update(format_version=version))
    with pytest.raises(EdgeftError, match="no valid format_version"):
        load_manifest(folder)


def test_wrong_kind_is_refused(folder):
    with pytest.raises(EdgeftError, match="holds 'artifacts', but 'bundle' is needed here") as info:
        load_manifest(folder, kind="bundle")
    assert info.value.hint == "give the path of an edgeft bundle folder."


def test_not_an_edgeft_folder(folder, tmp_path):
    with pytest.raises(EdgeftError, match="is not a folder"):
        load_manifest(folder / "model.onnx")
    with pytest.raises(EdgeftError, match="has no manifest.json"):
        load_manifest(folder / "sub")
    (folder / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(EdgeftError, match="cannot be read"):
        load_manifest(folder)
    (folder / MANIFEST_NAME).write_text('{"format_version": 1}')
    with pytest.raises(EdgeftError, match="no 'files' table"):
        load_manifest(folder)
    (folder / MANIFEST_NAME).write_text('{"format_version": 1, "files": {"model": "model.onnx"}}')
    with pytest.raises(EdgeftError, match="entry for 'model' is malformed"):
        load_manifest(folder)


@pytest.mark.parametrize("field, value, says", [
    ("portable", None, "The manifest field portable must be an object"),
    ("portable", {"available": "yes"}, "The manifest field portable.available must be"),
    ("source", [], "The manifest field source must be an object"),
    ("source", {"num_attention_heads": -2}, "The manifest field source.num_attention_heads is -2"),
])
def test_optional_sections_of_the_wrong_type_are_refused_by_name(tmp_path, tiny_bert, export_cache,
                                                                  field, value, says):
    """Sections training reads with .get (found by the manifest fuzzer: "portable": null crashed)."""
    import shutil

    from edgeft.manifest import check_fields

    folder = tmp_path / "artifacts"
    shutil.copytree(export_cache(model=str(tiny_bert), label_names=["off", "on"], train="last:1").folder, folder)
    edit_manifest(folder, lambda data: data.__setitem__(field, value))
    with pytest.raises(EdgeftError) as caught:
        check_fields(load_manifest(folder))
    assert says in str(caught.value) and f"field {field}" in caught.value.where
