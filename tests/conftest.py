"""Shared fixtures: tiny generated models (fast) and cached exports, built once per session."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeft.ortcompat import has_training_api

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # so `models:mlp` resolves as a factory

WORDS = ("turn on off the lights music play stop set alarm timer weather rain door lock please "
         "kitchen bedroom warmer colder a an to in is it my for at what").split()


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    BertTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]", model_max_length=64).save_pretrained(folder)


def _bert_config(num_labels: int = 2):
    from transformers import BertConfig

    return BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)


def make_tiny_bert(folder: Path) -> Path:
    """A bare BERT encoder folder (like a sentence-transformers model) with a WordPiece tokenizer."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    BertModel(_bert_config()).save_pretrained(folder)
    _tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_classifier(tmp_path_factory) -> Path:
    """A BERT folder that already has a 3-label sequence-classification head."""
    import torch
    from transformers import BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert-cls")
    torch.manual_seed(1)
    BertForSequenceClassification(_bert_config(num_labels=3)).save_pretrained(folder)
    _tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A 16x16-pixel ViT image classifier folder with its image processor config."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(2)
    config = ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=4)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """An ONNX forward model a user might bring: the tiny MLP exported for inference."""
    import torch

    from models import TinyMLP

    path = tmp_path_factory.mktemp("tiny-onnx") / "mlp.onnx"
    torch.manual_seed(3)
    model = TinyMLP().eval()
    with torch.no_grad():  # pretrained weights differ; fresh LayerNorms (all ones) would be merged by the exporter
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    torch.onnx.export(model, (torch.randn(2, 8),), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    return path


# Where ONNX Runtime's training API is installed (the ort-training environment), exports carry its
# artifacts too, so the tests of both backends run on the same folders.
FORMATS = ("portable", "ort-training") if has_training_api() else ("portable",)
ORT = pytest.param("ort-training", marks=pytest.mark.ort_training)


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    """Export once per distinct option set and reuse the folder across tests (read-only use)."""
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts

    cache: dict[str, object] = {}
    root = tmp_path_factory.mktemp("exports")

    def get(**kwargs):
        kwargs.setdefault("formats", FORMATS)
        key = json.dumps(kwargs, sort_keys=True, default=str)
        if key not in cache:
            out = root / f"e{len(cache)}"
            cache[key] = export_artifacts(ExportOptions(output=out, **kwargs))
        return cache[key]

    return get


def text_batch(folder: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """Tokenize with the artifact folder's tokenizer.json, padded to the longest text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    encoded = tok.encode_batch(texts)
    width = max(len(e.ids) for e in encoded)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


HEAVY = ("torch", "transformers", "optimum", "sentence_transformers")
# Makes `import torch` (and the others) fail as on a device where they are not installed;
# onnxruntime's training package then skips its optional torch helpers, as it does there.
BLOCK_HEAVY = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in HEAVY)


def cli_calls(*commands: list[str]) -> str:
    """Python code that runs ``edgeft`` with each argument list in turn and fails on a non-zero exit."""
    return ("from edgeft.cli import main\n"
            f"for args in {list(commands)!r}:\n"
            "    try:\n        main(args)\n    except SystemExit as e:\n        assert not e.code, e.code\n")


def run_device_side(code: str, timeout: int = 300):
    """Run Python code in a fresh interpreter in which torch, transformers and optimum cannot load."""
    import subprocess

    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY + code], capture_output=True, text=True,
                          timeout=timeout, cwd=str(TESTS))


def pytest_collection_modifyitems(config, items):
    """Tests of ONNX Runtime's training API (marked ort_training) run only where the ort-training extra
    is installed (`make test` runs them in a second environment, see the Makefile)."""
    if has_training_api():
        return
    skip = pytest.mark.skip(reason="ONNX Runtime's training API is not installed (the ort-training extra)")
    for item in items:
        if "ort_training" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the run's fuzzing and kill seed (see reliability_fuzz.run_seed), so a failure can be repeated."""
    seed = os.environ.get("EDGEFT_SEED")
    if seed:
        terminalreporter.write_line(f"edgeft fuzzing / kill seed of this run: {seed} (EDGEFT_SEED={seed} repeats it)")
