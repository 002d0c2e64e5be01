"""The device-side data package: reading files, encoding, batching and splitting, on real small files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edgeft.data.batching import token_pieces, length_bucketed_batches, sequential_batches
from edgeft.data.encode import ImageEncoder, TextEncoder
from edgeft.data.records import Records, read_records
from edgeft.data.split import stratified_split
from edgeft.errors import EdgeftError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "turn", "on", "off", "the", "lights", "play", "music", "a", "b", "c"]
ID = {word: i for i, word in enumerate(VOCAB)}


def manifest(task: str = "classification", names: list[str] | None = None, modality: str = "text",
             width: int | None = None) -> dict[str, Any]:
    """A hand-written manifest object of the shape export writes."""
    names = names if names is not None else ["lights_on", "lights_off", "music"]
    k = width if width is not None else len(names)
    label_input = ({"name": "labels", "dtype": "int64", "shape": ["batch"]} if task == "classification"
                   else {"name": "labels", "dtype": "float32", "shape": ["batch", k]})
    data: dict[str, Any] = {"task": task, "modality": modality, "labels": {"names": names, "input": label_input},
                            "output": {"name": "logits", "dtype": "float32", "shape": ["batch", k]}}
    if modality == "text":
        data["inputs"] = [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
                          {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]}]
        data["preprocessing"] = {"kind": "tokenizer", "file": "tokenizer.json", "max_length": 6, "pad_token_id": 0}
    elif modality == "image":
        data["inputs"] = [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 2, 3]}]
        data["preprocessing"] = {"kind": "image", "height": 2, "width": 3, "channels": 3,
                                 "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                 "rescale_factor": 1 / 255}
    else:
        data["inputs"] = [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
        data["preprocessing"] = {"kind": "none"}
    return data


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """Work in tmp_path so places read "train.csv:4" as a user typing a relative path sees them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_tokenizer(folder: Path) -> Path:
    """A WordPiece tokenizer.json over VOCAB in ``folder`` (the file the manifest helper names)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece(ID, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", ID["[CLS]"]), ("[SEP]", ID["[SEP]"])])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture
def tokenizer_folder(tmp_path) -> Path:
    return write_tokenizer(tmp_path / "artifacts")


def error(func, *args, **kwargs) -> str:
    with pytest.raises(EdgeftError) as info:
        func(*args, **kwargs)
    return str(info.value)


# ---- CSV / TSV ----------------------------------------------------------------------------------------------


def test_csv_classification_labels_texts_and_places(here):
    write(here, "train.csv", 'text,label\nturn on the lights,lights_on\n" lights off ", lights_off \n'
                             '"play\nmusic",music\n')
    records = read_records("train.csv", manifest())
    assert records.texts == ["turn on the lights", " lights off ", "play\nmusic"]
    assert records.labels.dtype == np.int64 and records.labels.tolist() == [0, 1, 2]
    assert records.places == ["train.csv:2", "train.csv:3", "train.csv:4"]  # a quoted newline: the row's first line
    assert records.skipped == [] and len(records) == 3 and records.source == "train.csv"
    assert records.files is None and records.arrays is None


def test_csv_rows_with_missing_values_are_skipped_and_listed(here):
    write(here, "train.csv", "label,text,extra\nlights_on,turn on,x\n\nmusic,play\n,lights\nmusic,  \nmusic\n"
                             "lights_off,off\n")
    records = read_records("train.csv", manifest())
    assert records.texts == ["turn on", "play", "off"]
    assert records.labels.tolist() == [0, 2, 1]
    assert records.places == ["train.csv:2", "train.csv:4", "train.csv:8"]
    assert records.skipped == ["train.csv:5: missing label", "train.csv:6: missing text",
                               "train.csv:7: missing text"]


def test_strict_refuses_a_missing_label_naming_file_and_line(here):
    write(here, "train.csv", "text,label\nturn on,lights_on\nplay,music\nlights,\n")
    message = error(read_records, "train.csv", manifest(), strict=True)
    assert "train.csv:4: missing label" in message


def test_a_row_with_extra_fields_is_skipped_and_listed_not_cut(here):
    write(here, "train.csv", "label,text\nlights_on,turn on the lights\nmusic,play, then stop\nlights_off,off,\n")
    records = read_records("train.csv", manifest())
    assert records.texts == ["turn on the lights", "off"]  # a trailing empty field cuts nothing
    assert records.skipped == ["train.csv:3: 3 fields, but the header has 2"]
    message = error(read_records, "train.csv", manifest(), strict=True)
    assert "train.csv:3: 3 fields, but the header has 2" in message and "double quotes" in message
    write(here, "train.tsv", "text\tlabel\nturn on\tlights_on\nplay\tmusic\textra\n")
    assert read_records("train.tsv", manifest()).skipped == ["train.tsv:3: 3 fields, but the header has 2"]


@pytest.mark.parametrize("name, content, separator", [
    ("semi.csv", "text;label\nturn on;lights_on\n", "semicolons"),
    ("tabs.csv", "text\tlabel\nturn on\tlights_on\n", "tabs"),
    ("commas.tsv", "text,label\nturn on,lights_on\n", "commas"),
])
def test_a_file_with_another_separator_gets_a_hint_about_it(here, name, content, separator):
    write(here, name, content)
    with pytest.raises(EdgeftError) as info:
        read_records(name, manifest())
    assert "has no column 'text'" in info.value.what
    assert f"the header looks separated by {separator}" in info.value.hint


def test_predict_tells_texts_from_files_by_an_explicit_rule(here):
    from edgeft.deployment.bundle import read_items

    write(here, "notes.txt", "turn on\n\nplay music\n")
    write(here, "rows.csv", "text,label\nturn on,x\n,y\nplay, loud,z\n")
    write(here, "empty.csv", "")
    write(here, "semi.csv", "text;label\nturn on;x\n")
    write(here, "README", "not data")
    (here / "folder").mkdir()
    assert read_items(["turn on the lights", "notes.txt"], "text") == ["turn on the lights", "turn on", "play music"]
    skipped: list[str] = []
    assert read_items(["rows.csv"], "text", skipped=skipped) == ["turn on"]
    assert skipped == ["rows.csv:3: missing text", "rows.csv:4: 3 fields, but the header has 2"]
    for args, message, hint in [
        (["nosuch.csv"], "The file nosuch.csv does not exist", "--text"),  # a data suffix: meant as a file
        (["folder"], "folder is a folder, but this bundle reads texts", "--text"),
        (["README"], "not from files without a suffix", "--text"),
        (["empty.csv"], "empty.csv is empty", "header row"),
        (["semi.csv"], "semi.csv has no column 'text'", "separated by semicolons"),
    ]:
        with pytest.raises(EdgeftError) as info:
            read_items(args, "text")
        assert message in info.value.what and hint in info.value.hint, (args, info.value.message())
        assert "None" not in info.value.message()
    assert read_items(["nosuch.csv", "README"], "text", as_text=True) == ["nosuch.csv", "README"]
    assert "The file turn on does not exist" in error(read_items, ["turn on"], "text", as_file=True)
    assert "--text gives texts" in error(read_items, ["x"], "image", as_text=True)


def test_tsv_is_tab_delimited_and_keeps_quotes_as_text(here):
    write(here, "train.tsv", 'sentence\tintent\n"turn on\tlights_on\nplay "loud" music\tmusic\n')
    records = read_records("train.tsv", manifest(), text_column="sentence", label_column="intent")
    assert records.texts == ['"turn on', 'play "loud" music']
    assert records.labels.tolist() == [0, 2]
    assert records.places == ["train.tsv:2", "train.tsv:3"]


def test_utf8_bom_is_accepted(here):
    write(here, "train.csv", b"\xef\xbb\xbftext,label\ncaf\xc3\xa9,music\n")
    records = read_records("train.csv", manifest())
    assert records.texts == ["café"] and records.labels.tolist() == [2]


def test_non_utf8_file_is_refused_naming_the_line(here):
    write(here, "train.csv", b"text,label\nturn on,lights_on\ncaf\xe9,music\n")
    message = error(read_records, "train.csv", manifest())
    assert "train.csv:3" in message and "UTF-8" in message


def test_unknown_label_names_file_line_label_and_known_labels(here):
    write(here, "train.csv", "text,label\nturn on,lights_on\nplay,musik\n")
    message = error(read_records, "train.csv", manifest())
    assert "train.csv:3: unknown label 'musik'" in message
    assert "'lights_on', 'lights_off', 'music'" in message


def test_long_label_lists_are_shortened_in_the_hint(here):
    names = [f"intent_{i}" for i in range(9)]
    write(here, "train.csv", "text,label\nturn on,nope\n")
    message = error(read_records, "train.csv", manifest(names=names))
    assert "'intent_4', ... (9 in all)" in message and "intent_5" not in message


def test_default_label_names_also_accept_class_numbers(here):
    names = ["LABEL_0", "LABEL_1", "LABEL_2"]
    write(here, "train.csv", "text,label\na,0\nb,2\nc,LABEL_1\n")
    assert read_records("train.csv", manifest(names=names)).labels.tolist() == [0, 2, 1]
    write(here, "bad.csv", "text,label\na,0\nb,3\n")
    message = error(read_records, "bad.csv", manifest(names=names))
    assert "bad.csv:3: unknown label '3'" in message and "class number 0..2" in message


def test_class_numbers_are_refused_when_the_model_has_real_label_names(here):
    write(here, "train.csv", "text,label\na,1\n")
    assert "train.csv:2: unknown label '1'" in error(read_records, "train.csv", manifest())


def test_missing_column_names_file_column_and_columns_present(here):
    write(here, "train.csv", "sentence,label\nturn on,lights_on\n")
    message = error(read_records, "train.csv", manifest())
    assert "train.csv has no column 'text'" in message and "sentence, label" in message
    assert "--text-column" in message
    message = error(read_records, "train.csv", manifest(), text_column="sentence", label_column="intent")
    assert "no column 'intent'" in message and "--label-column" in message


def test_empty_file_and_file_without_usable_rows_are_refused(here):
    write(here, "empty.csv", "")
    assert "empty.csv is empty" in error(read_records, "empty.csv", manifest())
    write(here, "header.csv", "text,label\n")
    assert "header.csv holds no usable examples" in error(read_records, "header.csv", manifest())
    write(here, "blank.csv", "text,label\n,lights_on\nturn on,\n")
    message = error(read_records, "blank.csv", manifest())
    assert "no usable examples; all 2 row(s) lack a value" in message


def test_nonexistent_path_and_unknown_format_are_refused(here):
    assert "does not exist" in error(read_records, "nothere.csv", manifest())
    write(here, "train.xlsx", "x")
    message = error(read_records, "train.xlsx", manifest())
    assert "cannot read .xlsx data" in message and ".jsonl" in message


def test_text_file_for_an_image_model_is_refused(here):
    write(here, "train.csv", "text,label\nturn on,cat\n")
    message = error(read_records, "train.csv", manifest(modality="image", names=["cat", "dog"]))
    assert "train.csv has no 'path' column, and this model reads image files" in message and "text, label" in message


# ---- JSONL --------------------------------------------------------------------------------------------------


def test_jsonl_string_and_integer_labels_and_blank_lines(here):
    names = ["LABEL_0", "LABEL_1", "LABEL_2"]
    write(here, "train.jsonl", '{"text": "turn on", "label": "LABEL_2"}\n\n{"text": "off", "label": 1}\n'
                               '{"text": "play", "label": "0", "other": true}\n   \n')
    records = read_records("train.jsonl", manifest(names=names))
    assert records.texts == ["turn on", "off", "play"]
    assert records.labels.tolist() == [2, 1, 0]
    assert records.places == ["train.jsonl:1", "train.jsonl:3", "train.jsonl:4"]


def test_jsonl_missing_values_are_skipped_and_wrong_types_refused(here):
    write(here, "train.jsonl", '{"text": "turn on", "label": "lights_on"}\n{"text": "off"}\n'
                               '{"text": null, "label": "music"}\n{"text": "", "label": null}\n')
    records = read_records("train.jsonl", manifest())
    assert records.labels.tolist() == [0]
    assert records.skipped == ["train.jsonl:2: missing label", "train.jsonl:3: missing text",
                               "train.jsonl:4: missing text and label"]
    write(here, "bad.jsonl", '{"text": "turn on", "label": true}\n')
    assert "bad.jsonl:1" in error(read_records, "bad.jsonl", manifest())
    write(here, "bad2.jsonl", '{"text": 5, "label": "music"}\n')
    assert "The text in bad2.jsonl:1 is int" in error(read_records, "bad2.jsonl", manifest())


def test_malformed_json_line_names_file_and_line(here):
    write(here, "train.jsonl", '{"text": "turn on", "label": "lights_on"}\n{"text": "off", "label": \n')
    message = error(read_records, "train.jsonl", manifest())
    assert "train.jsonl:2 is not valid JSON" in message
    write(here, "list.jsonl", '["turn on", "lights_on"]\n')
    assert "list.jsonl:1 holds a JSON list, not an object" in error(read_records, "list.jsonl", manifest())


def test_jsonl_key_absent_everywhere_is_a_missing_column(here):
    write(here, "train.jsonl", '{"sentence": "turn on", "label": "lights_on"}\n')
    message = error(read_records, "train.jsonl", manifest())
    assert "train.jsonl has no column 'text'; its columns are: sentence, label" in message


def test_jsonl_unknown_label_names_line_and_label(here):
    write(here, "train.jsonl", '{"text": "a", "label": "music"}\n{"text": "b", "label": "disco"}\n')
    assert "train.jsonl:2: unknown label 'disco'" in error(read_records, "train.jsonl", manifest())


# ---- multi-label and regression ----------------------------------------------------------------------------


def test_multi_label_csv_and_jsonl_become_multi_hot(here):
    spec = manifest(task="multi-label", names=["a", "b", "c"])
    write(here, "train.csv", "text,label\nx,a|c\ny, b ; c \nz,b\n")
    records = read_records("train.csv", spec)
    assert records.labels.dtype == np.float32
    assert records.labels.tolist() == [[1, 0, 1], [0, 1, 1], [0, 1, 0]]
    write(here, "train.jsonl", '{"text": "x", "label": ["c", "a"]}\n{"text": "y", "label": []}\n'
                               '{"text": "z", "label": "a;b"}\n')
    assert read_records("train.jsonl", spec).labels.tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 0]]
    write(here, "bad.csv", "text,label\nx,a|d\n")
    assert "bad.csv:2: unknown label 'd'" in error(read_records, "bad.csv", spec)
    write(here, "bad.jsonl", '{"text": "x", "label": ["a", "zz"]}\n')
    assert "bad.jsonl:1: unknown label 'zz'" in error(read_records, "bad.jsonl", spec)


def test_regression_single_and_multiple_targets(here):
    write(here, "one.csv", "text,label\nx,0.5\ny, -2e1 \n")
    one = read_records("one.csv", manifest(task="regression", names=["LABEL_0"]))
    assert one.labels.dtype == np.float32 and one.labels.tolist() == [[0.5], [-20.0]]
    spec = manifest(task="regression", names=["LABEL_0", "LABEL_1", "LABEL_2"])
    write(here, "three.csv", 'text,label\nx,1 2 3\ny,"4,5, 6"\n')
    assert read_records("three.csv", spec).labels.tolist() == [[1, 2, 3], [4, 5, 6]]
    write(here, "three.jsonl", '{"text": "x", "label": [1, 2.5, -3]}\n{"text": "y", "label": "7 8 9"}\n')
    assert read_records("three.jsonl", spec).labels.tolist() == [[1, 2.5, -3], [7, 8, 9]]


def test_regression_bad_targets_name_file_and_line(here):
    spec = manifest(task="regression", names=["LABEL_0", "LABEL_1"])
    write(here, "nan.csv", "text,label\nx,1 2\ny,nan 1\n")
    assert "nan.csv:3 is NaN or infinite" in error(read_records, "nan.csv", spec)
    write(here, "inf.jsonl", '{"text": "x", "label": [1, 2]}\n{"text": "y", "label": "inf 1"}\n')
    assert "inf.jsonl:2 is NaN or infinite" in error(read_records, "inf.jsonl", spec)
    write(here, "count.csv", "text,label\nx,1 2 3\n")
    assert "count.csv:2 gives 3 target value(s), but the model predicts 2" in error(read_records, "count.csv", spec)
    write(here, "word.csv", "text,label\nx,1 high\n")
    assert "The target in word.csv:2 is not a number" in error(read_records, "word.csv", spec)
    write(here, "type.jsonl", '{"text": "x", "label": [1, true]}\n')
    assert "type.jsonl:1 must be a number" in error(read_records, "type.jsonl", spec)


# ---- npz ----------------------------------------------------------------------------------------------------


def test_npz_arrays_are_checked_and_cast(here):
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.savez("train.npz", x=x, labels=np.array([2, 0, 1], dtype=np.int32))
    records = read_records("train.npz", manifest(modality="tensor"))
    assert records.arrays is not None and records.arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(records.arrays["x"], x.astype(np.float32))
    assert records.labels.dtype == np.int64 and records.labels.tolist() == [2, 0, 1]
    assert records.places == ["train.npz[0]", "train.npz[1]", "train.npz[2]"] and records.texts is None


def test_npz_text_inputs_accept_any_sequence_length(here):
    ids = np.array([[2, 4, 3, 0], [2, 9, 10, 3]])
    np.savez("train.npz", input_ids=ids, attention_mask=(ids > 0).astype(np.int64), labels=np.array([0, 2]))
    records = read_records("train.npz", manifest())
    assert records.arrays is not None and records.arrays["input_ids"].shape == (2, 4)


def test_npz_regression_accepts_a_target_vector_for_one_output(here):
    np.savez("train.npz", x=np.zeros((2, 4)), labels=np.array([0.5, 1.5]))
    records = read_records("train.npz", manifest(task="regression", names=["LABEL_0"], modality="tensor"))
    assert records.labels.tolist() == [[0.5], [1.5]]


@pytest.mark.parametrize("arrays, expected", [
    ({"x": np.zeros((2, 4))}, "train.npz lacks labels; it holds: x"),
    ({"x": np.zeros((2, 4)), "labels": np.zeros(2, np.int64), "y": np.zeros(2)}, "has unexpected arrays y"),
    ({"x": np.zeros((3, 4)), "labels": np.zeros(2, np.int64)}, "do not agree on the number of examples"),
    ({"x": np.zeros((2, 5)), "labels": np.zeros(2, np.int64)}, "'x' in train.npz has shape [2, 5]"),
    ({"x": np.zeros((2, 4, 1)), "labels": np.zeros(2, np.int64)}, "has shape [2, 4, 1]"),
    ({"x": np.zeros((2, 4), np.complex64), "labels": np.zeros(2, np.int64)}, "complex64, which does not convert"),
    ({"x": np.zeros((2, 4)), "labels": np.zeros(2, np.float32)}, "'labels' in train.npz is float32"),
    ({"x": np.zeros((2, 4)), "labels": np.array([0, 3])}, "Label 3 at train.npz[1] is not a class number 0..2"),
    ({"x": np.zeros((0, 4)), "labels": np.zeros(0, np.int64)}, "train.npz holds no examples"),
])
def test_npz_problems_are_refused(here, arrays, expected):
    np.savez("train.npz", **arrays)
    assert expected in error(read_records, "train.npz", manifest(modality="tensor"))


def test_npz_float_label_problems_are_refused(here):
    spec = manifest(task="multi-label", names=["a", "b"], modality="tensor")
    np.savez("nan.npz", x=np.zeros((2, 4)), labels=np.array([[0, 1], [np.nan, 0]]))
    assert "labels at nan.npz[1] are NaN or infinite" in error(read_records, "nan.npz", spec)
    np.savez("range.npz", x=np.zeros((2, 4)), labels=np.array([[0, 2], [1, 0]]))
    assert "targets at range.npz[0] are outside 0..1" in error(read_records, "range.npz", spec)
    write(here, "broken.npz", b"not a zip file")
    assert "broken.npz is not a readable .npz file" in error(read_records, "broken.npz", spec)


# ---- image folders ------------------------------------------------------------------------------------------


def png(path: Path, color: tuple[int, int, int] = (255, 0, 128), size: tuple[int, int] = (6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_image_folder_classes_and_skipped_files(here):
    spec = manifest(modality="image", names=["cat", "dog"])
    png(here / "pets" / "dog" / "b.png")
    png(here / "pets" / "dog" / "a.PNG")
    png(here / "pets" / "cat" / "nested" / "c.png")
    write(here / "pets" / "cat", "notes.txt", "hello")
    write(here / "pets" / "cat", ".DS_Store", "x")
    png(here / "pets" / "stray.png")
    records = read_records("pets", spec)
    assert records.files == [Path("pets/cat/nested/c.png"), Path("pets/dog/a.PNG"), Path("pets/dog/b.png")]
    assert records.labels.tolist() == [0, 1, 1]
    assert records.places == ["pets/cat/nested/c.png", "pets/dog/a.PNG", "pets/dog/b.png"]
    assert records.skipped == ["pets/cat/notes.txt: not an image file",
                               "pets/stray.png: missing label (not inside a class subfolder)"]
    assert "pets/cat/notes.txt: not an image file" in error(read_records, "pets", spec, strict=True)


def test_image_folder_with_an_unknown_class_names_the_folder(here):
    png(here / "pets" / "cat" / "a.png")
    png(here / "pets" / "bird" / "a.png")
    message = error(read_records, "pets", manifest(modality="image", names=["cat", "dog"]))
    assert "pets/bird: unknown class folder 'bird'" in message


def test_image_folder_is_refused_for_other_models_and_when_empty(here):
    png(here / "pets" / "cat" / "a.png")
    assert "only image and audio models read folders" in error(read_records, "pets", manifest())
    spec = manifest(task="multi-label", modality="image", names=["cat", "dog"])
    assert "A folder of class subfolders gives one class per file" in error(read_records, "pets", spec)
    (here / "empty" / "cat").mkdir(parents=True)
    assert "empty holds no usable examples" in error(read_records, "empty", manifest(modality="image",
                                                                                  names=["cat"]))


def test_subset_keeps_examples_in_the_given_order(here):
    write(here, "train.csv", "text,label\na,music\nb,lights_on\n,music\nc,lights_off\n")
    records = read_records("train.csv", manifest())
    part = records.subset(np.array([2, 0]))
    assert isinstance(part, Records) and len(part) == 2
    assert part.texts == ["c", "a"] and part.labels.tolist() == [1, 2]
    assert part.places == ["train.csv:5", "train.csv:2"] and part.skipped == []
    np.savez("train.npz", x=np.arange(8.0).reshape(2, 4), labels=np.array([1, 0]))
    arrays = read_records("train.npz", manifest(modality="tensor")).subset(np.array([1]))
    assert arrays.arrays is not None and arrays.arrays["x"].tolist() == [[4, 5, 6, 7]]
    assert arrays.labels.tolist() == [0] and arrays.places == ["train.npz[1]"]


# ---- encoders -----------------------------------------------------------------------------------------------


def test_text_encoder_adds_special_tokens_truncates_and_pads(tokenizer_folder):
    encoder = TextEncoder(tokenizer_folder, manifest())
    ids = encoder.encode(["Turn on the lights", "play", "turn on the lights play music a b c"])
    assert [seq.dtype for seq in ids] == [np.int64] * 3
    assert ids[0].tolist() == [2, ID["turn"], ID["on"], ID["the"], ID["lights"], 3]
    assert ids[1].tolist() == [2, ID["play"], 3]
    assert len(ids[2]) == 6 and ids[2].tolist() == [2, ID["turn"], ID["on"], ID["the"], ID["lights"], 3]
    batch = encoder.pad(ids[:2])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].dtype == np.int64 and batch["attention_mask"].dtype == np.int64
    assert batch["input_ids"].tolist() == [[2, 4, 5, 7, 8, 3], [2, 9, 3, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert encoder.pad([ids[1]])["input_ids"].tolist() == [[2, 9, 3]]  # padded to the batch, not to max_length


def test_text_encoder_pads_with_the_manifests_pad_id(tokenizer_folder):
    spec = manifest()
    spec["preprocessing"]["pad_token_id"] = 1
    encoder = TextEncoder(tokenizer_folder, spec)
    assert encoder.pad(encoder.encode(["play music", "a"]))["input_ids"].tolist() == [[2, 9, 10, 3], [2, 11, 3, 1]]


def test_text_encoder_refuses_a_missing_tokenizer_or_a_non_text_model(tmp_path):
    assert "The tokenizer cannot be loaded" in error(TextEncoder, tmp_path, manifest())
    assert "no tokenizer preprocessing" in error(TextEncoder, tmp_path, manifest(modality="tensor"))


def test_image_encoder_resizes_rescales_and_normalises(tmp_path):
    encoder = ImageEncoder(manifest(modality="image", names=["cat"]))
    pixels = encoder.load(png(tmp_path / "a.png", color=(255, 0, 128), size=(7, 5)))
    assert pixels.dtype == np.float32 and pixels.shape == (3, 2, 3)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        np.testing.assert_allclose(pixels[channel], np.full((2, 3), value), rtol=1e-5)


def test_image_encoder_uses_bilinear_resize_and_converts_grey_to_rgb(tmp_path):
    grey = np.arange(40, dtype=np.uint8).reshape(5, 8) * 6
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    spec = manifest(modality="image", names=["cat"])
    spec["preprocessing"].update(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], rescale_factor=1.0)
    pixels = ImageEncoder(spec).load(tmp_path / "g.png")
    reference = np.asarray(Image.fromarray(grey, mode="L").resize((3, 2), Image.BILINEAR), dtype=np.float32)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[channel], reference)


def test_image_encoder_names_a_file_it_cannot_read(tmp_path):
    bad = write(tmp_path, "broken.png", b"\x89PNG not really")
    message = error(ImageEncoder(manifest(modality="image", names=["cat"])).load, bad)
    assert f"{bad} cannot be read as an image" in message


# ---- batching -----------------------------------------------------------------------------------------------


def padding(batches: list[np.ndarray], lengths: np.ndarray) -> float:
    """Mean padded positions per example when each batch is padded to its longest member."""
    return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches) / len(lengths)


def test_bucketed_batches_cover_every_index_once_and_are_reproducible():
    lengths = np.random.default_rng(7).integers(3, 120, size=2000)
    batches = length_bucketed_batches(lengths, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(2000))
    assert sorted(len(b) for b in batches) == [16] * 125
    again = length_bucketed_batches(lengths, 16, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again)) and len(again) == len(batches)
    other = length_bucketed_batches(lengths, 16, np.random.default_rng(2))
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))
    assert all((np.diff(lengths[b]) >= 0).all() for b in batches)  # cut from a length-sorted chunk


def test_bucketing_pads_less_than_plain_shuffling():
    lengths = np.random.default_rng(0).integers(3, 120, size=2000)
    bucketed = length_bucketed_batches(lengths, 16, np.random.default_rng(0))
    plain = length_bucketed_batches(lengths, 16, np.random.default_rng(0), bucket=False)
    assert sorted(np.concatenate(plain).tolist()) == list(range(2000))
    assert padding(bucketed, lengths) < padding(plain, lengths) / 5


def test_unbucketed_batches_are_the_shuffled_order_cut_in_pieces_with_the_last_kept():
    batches = length_bucketed_batches(np.ones(10), 4, np.random.default_rng(3), bucket=False)
    order = np.random.default_rng(3).permutation(10)
    assert [b.tolist() for b in batches] == [order[:4].tolist(), order[4:8].tolist(), order[8:].tolist()]
    bucketed = length_bucketed_batches(np.arange(10), 4, np.random.default_rng(3))
    assert sorted(len(b) for b in bucketed) == [2, 4, 4]
    assert length_bucketed_batches(np.zeros(0), 4, np.random.default_rng(3)) == []


def test_token_pieces_cut_a_long_batch_in_order_within_the_budget():
    lengths = np.array([5, 9, 9, 12, 30, 4, 7, 7])
    batch = np.array([0, 5, 6, 7, 1, 2, 3, 4])
    assert [p.tolist() for p in token_pieces(batch, lengths, 0)] == [batch.tolist()]  # 0: no limit
    assert [p.tolist() for p in token_pieces(batch, lengths, 8 * 30)] == [batch.tolist()]  # fits: one piece
    pieces = token_pieces(batch, lengths, 24)
    assert np.concatenate(pieces).tolist() == batch.tolist()  # every example once, in order
    assert all(len(p) * lengths[p].max() <= 24 or len(p) == 1 for p in pieces)
    assert [p.tolist() for p in pieces] == [[0, 5, 6], [7, 1], [2, 3], [4]]  # 30 tokens alone: one example


def test_sequential_batches():
    assert [b.tolist() for b in sequential_batches(10, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sequential_batches(0, 4) == []


# ---- split --------------------------------------------------------------------------------------------------


def test_stratified_split_keeps_every_class_in_both_parts():
    labels = np.array([0] * 20 + [1] * 2 + [2] * 7 + [3] * 1, dtype=np.int64)
    rng = np.random.default_rng(5)
    labels = labels[rng.permutation(len(labels))]
    train, val = stratified_split(labels, 0.25, seed=11)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.array_equal(train, np.sort(train)) and np.array_equal(val, np.sort(val))
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert {c: int((labels[val] == c).sum()) for c in range(4)} == {0: 5, 1: 1, 2: 2, 3: 0}
    assert set(labels[train].tolist()) == {0, 1, 2, 3}
    again = stratified_split(labels, 0.25, seed=11)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(stratified_split(labels, 0.25, seed=12)[1], val)


def test_stratified_split_holds_out_at_least_one_and_never_a_whole_class():
    train, val = stratified_split(np.array([0, 0, 1, 1, 1]), 0.9, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == [0, 1, 2, 3, 4]
    assert len(val) == 3 and set(np.array([0, 0, 1, 1, 1])[train].tolist()) == {0, 1}


def test_float_labels_get_a_plain_seeded_split():
    labels = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    train, val = stratified_split(labels, 0.2, seed=4)
    assert len(val) == 10 and len(train) == 40
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(50))
    assert np.array_equal(stratified_split(labels, 0.2, seed=4)[1], val)
    assert not np.array_equal(stratified_split(labels, 0.2, seed=5)[1], val)


# ---- device-side imports ------------------------------------------------------------------------------------


def test_data_modules_import_no_heavy_packages():
    code = ("import sys\nimport edgeft.data.records, edgeft.data.encode, edgeft.data.batching, edgeft.data.split\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
