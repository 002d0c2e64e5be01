"""Hints that point somewhere: every option a message suggests exists and does what it says, and a
folder or model edgeft cannot use is named for what it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeft.errors import EdgeftError
from reliability_faults import failed_cleanly, run_edgeft
from test_train import LABELS, dataset, write_csv


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hints")


@pytest.fixture(scope="module")
def artifacts(tiny_bert, export_cache) -> Path:
    return export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1").folder


@pytest.fixture(scope="module")
def data(root) -> tuple[Path, Path]:
    return write_csv(root / "train.csv", dataset(0, 8)), write_csv(root / "val.csv", dataset(1, 4))


@pytest.fixture(scope="module")
def run(artifacts, data, root) -> Path:
    out = run_edgeft(["train", artifacts, data[0], "--val", data[1], "--epochs", "3", "--lr", "5e-3", "--run-dir",
                      root / "run", "--json"], root)
    assert out.returncode == 0, out.stderr
    return root / "run"


# ---- export --list-parameters ---------------------------------------------------------------------------------


def test_the_hint_for_a_regex_that_matches_nothing_names_a_command_that_lists_the_names(tiny_onnx, root):
    from edgeft.exporting.onnx_source import parameter_order
    from edgeft.selection import select_trainable

    import onnx

    order = parameter_order(onnx.load(str(tiny_onnx)))
    with pytest.raises(EdgeftError) as info:
        select_trainable(order, "no_such_layer")
    assert "edgeft export MODEL --list-parameters" in info.value.hint
    out = run_edgeft(["export", tiny_onnx, "--list-parameters", "--train", "blocks\\.1\\.", "--json"], root,
                     device_side=False)
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assert [p["name"] for p in listing["parameters"]] == order  # what a --train regex is matched against
    assert [p["name"] for p in listing["parameters"] if p["trainable"]] == select_trainable(order, "blocks\\.1\\.")
    assert listing["blocks"] == 3 and listing["block_prefix"] == "blocks."
    assert {p["block"] for p in listing["parameters"] if p["name"].startswith("blocks.1.")} == {"blocks.1"}
    assert {p["block"] for p in listing["parameters"] if p["name"].startswith("head.")} == {"head"}
    assert all(p["parameters"] == int(np.prod(p["shape"])) for p in listing["parameters"])


def test_list_parameters_prints_every_whole_name_and_writes_nothing(tiny_bert, root, tmp_path):
    out = run_edgeft(["export", tiny_bert, "--list-parameters", "--train", "nothing_matches", "-o", tmp_path / "art"],
                     root, device_side=False)
    assert out.returncode == 0, out.stderr
    assert "backbone.encoder.layer.1.attention.self.query.weight" in out.stdout  # a bare encoder, a new head
    assert "classifier.weight" in out.stdout and "head" in out.stdout
    assert "matches no parameter" in out.stderr  # the --train problem, as a note
    assert not (tmp_path / "art").exists()


# ---- deploy --checkpoint -------------------------------------------------------------------------------------


def test_deploy_takes_another_checkpoint_as_its_hint_says(run, root):
    from edgeft.backends.state import verify_checkpoint
    from edgeft.run import checkpoints
    from edgeft.evaluation.evaluate import checkpoint_parameters

    step = checkpoints.listed(run)[0]
    (step / "trainable.npz").write_bytes((step / "trainable.npz").read_bytes() + b"x")  # damage it: see the hint
    with pytest.raises(EdgeftError) as info:
        verify_checkpoint(step)
    assert "edgeft deploy RUN --checkpoint" in info.value.hint
    shutil.rmtree(step)
    best = checkpoint_parameters(run / checkpoints.BEST)
    other = next(s for s in checkpoints.listed(run)
                 if any(not np.array_equal(v, best[k]) for k, v in checkpoint_parameters(s).items()))
    reports = {}
    for name, extra in (("best", []), ("other", ["--checkpoint", other])):
        out = run_edgeft(["deploy", run, "--device", "raspberry-pi-5", "-o", root / f"bundle-{name}", "--json",
                          *extra], root)
        assert out.returncode == 0, out.stderr
        reports[name] = json.loads(out.stdout)
    assert Path(reports["other"]["checkpoint"]) == other
    assert Path(reports["best"]["checkpoint"]).parent == run / checkpoints.BEST
    assert (root / "bundle-best" / "model.onnx").read_bytes() != (root / "bundle-other" / "model.onnx").read_bytes()
    missing = run_edgeft(["deploy", run, "--checkpoint", run / "checkpoints" / "step-99999999", "-o",
                          root / "bundle-none"], root)
    assert not failed_cleanly(missing) and "step-99999999 does not exist" in missing.stderr


# ---- what a folder or a model is ----------------------------------------------------------------------------


def test_a_run_folder_is_called_a_run_folder_not_something_to_export(run, artifacts, data, root):
    for args, hint in [(["train", run, data[0], "--run-dir", root / "run2"], str(artifacts)),
                       (["inspect", run], f"edgeft deploy {run}"),
                       (["verify", run], f"edgeft evaluate {run} DATA"),
                       (["predict", run, "turn on the lights"], f"deploy the run first (`edgeft deploy {run}`)")]:
        out = run_edgeft(args, root)
        assert not failed_cleanly(out), failed_cleanly(out)
        assert f"{run} is a run folder (written by edgeft train)" in out.stderr and hint in out.stderr, out.stderr
        assert "edgeft export" not in out.stderr


def make_wav2vec2(folder: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2)
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor().save_pretrained(folder)
    return folder


def make_whisper(folder: Path) -> Path:
    """A Whisper folder: a tokenizer config next to the feature extractor, as the hub's have."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=100,
                           max_source_positions=32, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "WhisperTokenizer"}))
    return folder


@pytest.mark.parametrize("make, model_type", [(make_wav2vec2, "wav2vec2"), (make_whisper, "whisper")])
@pytest.mark.parametrize("modality", ["image", "text"])
def test_an_audio_model_read_as_text_or_images_is_refused_in_one_short_message(make, model_type, modality, root,
                                                                               tmp_path):
    folder = root / model_type
    if not folder.exists():
        make(folder)
    out = run_edgeft(["export", folder, "-o", tmp_path / "art", "--modality", modality], root, device_side=False)
    assert not failed_cleanly(out), failed_cleanly(out)
    article = "an image" if modality == "image" else "a text"
    assert f"holds an audio model ({model_type}), not {article} model" in out.stderr, out.stderr
    error = out.stderr[out.stderr.index("error: "):]
    assert len(error) < 400 and "--modality audio" in error, error


def test_a_whisper_folder_with_a_tokenizer_is_read_as_audio(root, tmp_path):
    """The hub's Whisper folders hold a tokenizer next to the feature extractor: still audio."""
    from edgeft.exporting.hf_source import detect_modality

    folder = root / "whisper"
    if not folder.exists():
        make_whisper(folder)
    assert detect_modality(folder) == "audio"
