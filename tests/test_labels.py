"""Label files: one name per line (.txt) or a JSON list (.json), in order; empty files, blank
names, duplicates, bad JSON and unreadable files are each one EdgeftError naming the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeft.errors import EdgeftError
from edgeft.labels import read_label_file


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_text_file_one_label_per_line(tmp_path):
    path = write(tmp_path, "labels.txt", "  turn_on \r\n\r\nturn_off\n\n  \nset alarm\n")
    assert read_label_file(path) == ["turn_on", "turn_off", "set alarm"]
    assert read_label_file(str(path)) == ["turn_on", "turn_off", "set alarm"]


def test_any_other_suffix_is_read_as_text(tmp_path):
    assert read_label_file(write(tmp_path, "labels", "b\na\n")) == ["b", "a"]


@pytest.mark.parametrize("name", ["labels.json", "LABELS.JSON"])
def test_json_list(tmp_path, name):
    assert read_label_file(write(tmp_path, name, '[" negative", "positive ", "\u00e9t\u00e9"]')) == [
        "negative", "positive", "\u00e9t\u00e9"]


@pytest.mark.parametrize("name,content", [("labels.txt", "\ufeffyes\nno\n"), ("labels.json", '\ufeff["yes", "no"]')])
def test_byte_order_mark_is_not_part_of_the_first_label(tmp_path, name, content):
    assert read_label_file(write(tmp_path, name, content)) == ["yes", "no"]


def test_labels_are_case_sensitive(tmp_path):
    assert read_label_file(write(tmp_path, "l.txt", "Yes\nyes\n")) == ["Yes", "yes"]


def test_missing_file(tmp_path):
    with pytest.raises(EdgeftError, match="does not exist") as info:
        read_label_file(tmp_path / "nope.txt")
    assert info.value.where == str(tmp_path / "nope.txt")


def test_unreadable_file(tmp_path):
    path = write(tmp_path, "latin1.txt", "caf\u00e9\n".encode("latin-1"))
    with pytest.raises(EdgeftError, match="cannot be read") as info:
        read_label_file(path)
    assert "UTF-8" in info.value.hint
    with pytest.raises(EdgeftError, match="cannot be read"):
        read_label_file(tmp_path)  # a folder


def test_invalid_json_names_the_line(tmp_path):
    path = write(tmp_path, "labels.json", '[\n"yes",\n"no"\n')
    with pytest.raises(EdgeftError, match="not valid JSON") as info:
        read_label_file(path)
    assert info.value.where == f"{path}:4"


@pytest.mark.parametrize("content", ['{"0": "yes"}', '["yes", 1]', '"yes"', '[null]'])
def test_json_must_be_a_list_of_strings(tmp_path, content):
    with pytest.raises(EdgeftError, match="must hold a list of strings"):
        read_label_file(write(tmp_path, "labels.json", content))


@pytest.mark.parametrize("name,content", [("l.txt", ""), ("l.txt", " \n\n\t\n"), ("l.json", "[]")])
def test_no_labels(tmp_path, name, content):
    with pytest.raises(EdgeftError, match="holds no labels"):
        read_label_file(write(tmp_path, name, content))


def test_blank_json_name(tmp_path):
    with pytest.raises(EdgeftError, match="empty label name"):
        read_label_file(write(tmp_path, "labels.json", '["yes", "  ", "no"]'))


def test_duplicate_names_the_entry(tmp_path):
    path = write(tmp_path, "labels.txt", "yes\n\nno\n yes\n")
    with pytest.raises(EdgeftError, match="The label 'yes' appears twice.") as info:
        read_label_file(path)
    assert info.value.where == f"{path}: entry 3"  # entries count labels, not blank lines
    assert info.value.hint == "give each label once."
