"""Hugging Face transformers folders: text and image classification, and sentence embeddings
(audio classifiers: :mod:`edgeft.exporting.hf_audio`).

A folder with a classification head is used as it is (the head is replaced when the label count
differs). A bare text encoder, such as a sentence-transformers model, gets mean pooling and a
new linear head, initialised from a fixed seed so exports are reproducible. For the embedding
task any text encoder gets mean pooling and L2 normalisation, and no head: the embedding itself
is what trains.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeft.errors import EdgeftError
from edgeft.exporting.source import InputSpec, LoadedModel, Preprocessing
from edgeft.exporting.torch_export import PositionalModel
from edgeft.manifest_fields import IMAGE_RESAMPLING


class MeanPoolClassifier(nn.Module):
    """Encoder + attention-masked mean pooling + linear head (the sentence-transformers recipe)."""

    def __init__(self, backbone: nn.Module, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(mean_pool(hidden, attention_mask))


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the token vectors the attention mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class MeanPoolEmbedder(nn.Module):
    """Encoder + attention-masked mean pooling + L2 normalisation: all-MiniLM-L6-v2's own recipe,
    so the exported model embeds as sentence-transformers does. The norm is written with
    products and a square root (not ReduceL2), which every gradient builder differentiates."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = mean_pool(self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,
                           attention_mask)
        return pooled / torch.sqrt((pooled * pooled).sum(-1, keepdim=True) + 1e-12)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise EdgeftError(f"{folder} is not a transformers model folder (no config.json).", where=str(folder),
                          hint="give a folder saved with save_pretrained(), an .onnx file, or module:factory.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeftError(f"config.json cannot be read: {exc}.", where=str(path),
                          hint="repair or re-download the model folder.") from exc


# Speech and audio model types of transformers; their folders may also hold a tokenizer (Whisper)
# or a preprocessor_config.json (a feature extractor), which must not pass for text or images.
AUDIO_MODEL_TYPES = frozenset({
    "wav2vec2", "wav2vec2-bert", "wav2vec2-conformer", "whisper", "hubert", "wavlm", "data2vec-audio", "unispeech",
    "unispeech-sat", "sew", "sew-d", "speecht5", "speech_to_text", "audio-spectrogram-transformer", "clap", "encodec",
    "seamless_m4t", "seamless_m4t_v2", "moonshine", "mimi", "musicgen", "univnet", "whisper_encoder",
})


def _json_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def is_audio(folder: Path) -> str | None:
    """The kind of a speech or audio model (its model type, or a feature extractor that reads
    sound at a sampling rate), or None."""
    model_type = _json_file(folder / "config.json").get("model_type")
    extractor = _json_file(folder / "preprocessor_config.json")
    if model_type in AUDIO_MODEL_TYPES or "sampling_rate" in extractor:
        return str(model_type or extractor.get("feature_extractor_type") or "audio")
    return None


def refuse_audio(folder: Path, modality: str) -> None:
    """A clear refusal for an audio model read as text or images (``--modality``), instead of a
    tokenizer or image-processor error."""
    kind = is_audio(folder)
    if kind:
        raise EdgeftError(f"{folder} holds an audio model ({kind}), not {'an image' if modality == 'image' else 'a text'} "
                          "model.", where=str(folder),
                          hint="leave out --modality (or give --modality audio).")


def detect_modality(folder: Path) -> str:
    """``audio`` for a speech or audio model, ``text`` when the folder has a tokenizer, ``image``
    when it has an image processor."""
    if is_audio(folder):
        return "audio"
    if any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
        return "text"
    if (folder / "preprocessor_config.json").is_file():
        return "image"
    raise EdgeftError(f"{folder} has neither a tokenizer nor an image preprocessor or audio feature extractor config.",
                      where=str(folder), hint="add tokenizer.json (text) or preprocessor_config.json (images, audio) "
                                              "to the folder.")


def _num_labels(config: dict[str, Any], label_names: list[str], num_labels: int | None) -> tuple[int, list[str]]:
    if label_names:
        if num_labels is not None and num_labels != len(label_names):
            raise EdgeftError(f"--num-labels {num_labels} disagrees with the {len(label_names)} names in --labels.",
                              where="--num-labels / --labels", hint="give one of the two.")
        return len(label_names), label_names
    if num_labels is not None:
        return num_labels, [f"LABEL_{i}" for i in range(num_labels)]
    id2label = config.get("id2label") or {}
    if id2label:
        names = [id2label[k] for k in sorted(id2label, key=int)]
        return len(names), names
    return 2, ["LABEL_0", "LABEL_1"]


def _load_failed(folder: Path, exc: Exception) -> EdgeftError:
    # transformers appends every model type it knows (about 1,800 characters) to some errors
    reason = re.split(r"\s*(?:Model type should be one of|Should have a `)", str(exc), maxsplit=1)[0]
    reason = reason if len(reason) <= 300 else reason[:300] + " ..."
    return EdgeftError(f"transformers could not load the model: {reason}", where=str(folder),
                       hint="check that the folder holds a complete text or image classification model "
                            "(config.json and weights).")


def _initialised(info: dict[str, Any]) -> list[str]:
    """Parameters ``from_pretrained`` initialised instead of loading (missing, or resized for the
    label count), named as in the exported module (under PositionalModel's ``model.``)."""
    keys = [*info.get("missing_keys", []), *info.get("mismatched_keys", [])]
    return sorted({f"model.{k[0] if isinstance(k, (tuple, list)) else k}" for k in keys})


def load_text(folder: Path, label_names: list[str], num_labels: int | None, max_length: int,
              seed: int, embedding: bool = False) -> LoadedModel:
    """A text classifier from a transformers folder (new mean-pool head for a bare encoder), or
    with ``embedding`` the encoder's normalised mean-pooled embedding."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    refuse_audio(folder, "text")
    raw = _read_config(folder)
    count, names = (0, []) if embedding else _num_labels(raw, label_names, num_labels)
    notes = []
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True, local_files_only=True)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        torch.manual_seed(seed)
        if embedding:
            backbone = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
            module = MeanPoolEmbedder(backbone)
            count, new = int(config.hidden_size), []
            notes.append(f"embedding: mean pooling and L2 normalisation of the encoder's {count} dimensions, no head"
                         + (" (the folder's classification head is left out)" if has_head else ""))
        elif has_head:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                folder, num_labels=count, ignore_mismatched_sizes=True, local_files_only=True,
                attn_implementation="eager", output_loading_info=True)
            module = PositionalModel(model, ["input_ids", "attention_mask"])
            new = _initialised(info)
            notes.append("used the folder's sequence-classification head")
        else:
            backbone = AutoModel.from_pretrained(folder, local_files_only=True, attn_implementation="eager")
            module = MeanPoolClassifier(backbone, config.hidden_size, count)
            new = [f"classifier.{p}" for p, _ in module.classifier.named_parameters()]
            notes.append(f"bare encoder: added mean pooling and a new linear head ({count} labels, seed {seed})")
    except EdgeftError:
        raise
    except Exception as exc:
        raise _load_failed(folder, exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise EdgeftError("The folder's tokenizer has no fast (tokenizers) version.", where=str(folder),
                          hint="save the tokenizer with a tokenizer.json file.")
    limit = min(max_length, int(getattr(config, "max_position_embeddings", max_length)))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.backend_tokenizer.save(str(Path(tmp) / "tokenizer.json"))
        tokenizer_json = (Path(tmp) / "tokenizer.json").read_bytes()
    encoded = tokenizer(["a sample sentence for export", "another one"], padding=True, return_tensors="pt")
    sample = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    inputs = [InputSpec("input_ids", "int64", ["batch", "sequence"]),
              InputSpec("attention_mask", "int64", ["batch", "sequence"])]
    preprocessing = Preprocessing(
        kind="tokenizer",
        settings={"file": "tokenizer.json", "max_length": limit, "pad_token_id": int(tokenizer.pad_token_id or 0)},
        files={"tokenizer.json": tokenizer_json})
    return LoadedModel(inputs=inputs, output="embedding" if embedding else "logits", num_outputs=count,
                       source={"kind": "transformers", "model_type": config.model_type,
                               "num_attention_heads": getattr(config, "num_attention_heads", None),
                               "hidden_size": getattr(config, "hidden_size", None)},
                       module=module, sample=sample, task_hint="text-embedding" if embedding else "text-classification",
                       label_names=names, preprocessing=preprocessing, notes=notes, new_parameters=new)


RESAMPLE = dict(enumerate(IMAGE_RESAMPLING))  # pillow's filter numbers, as image processors store them
# settings an image processor may carry that change nothing edgeft must reproduce when they are off
_IGNORED_OFF = ("do_pad", "do_reduce_labels", "do_flip_channel_order", "do_color_quantize")


def image_settings(processor: Any, config: Any, folder: Path) -> dict[str, Any]:
    """The preprocessing of a transformers image processor as the device reproduces it with
    pillow and numpy (see edgeft.data.encode.ImageEncoder): resize (to a size, or the shortest
    edge with the aspect ratio kept; ConvNeXt's crop_pct), centre crop, rescale (with an offset),
    normalise. A setting edgeft cannot reproduce is an export error, not a silent difference."""
    where = str(folder / "preprocessor_config.json")
    name = type(processor).__name__

    def refuse(what: str) -> EdgeftError:
        return EdgeftError(f"The image processor ({name}) {what}, which edgeft's device-side preprocessing does not "
                           "reproduce.", where=where, hint="change that setting in preprocessor_config.json (the "
                                                           "model then sees what it will see on the device), or "
                                                           "export the model as ONNX with its own preprocessing.")

    for key in _IGNORED_OFF:
        if getattr(processor, key, False):
            raise refuse(f"sets {key}")
    resample = getattr(processor, "resample", 2)
    resample = RESAMPLE.get(int(resample) if resample is not None else 2)
    if resample is None:
        raise refuse(f"resamples with {processor.resample!r}")
    size = dict(getattr(processor, "size", None) or {})
    channels = int(getattr(config, "num_channels", 3))
    resize: dict[str, int] | None = None
    crop: dict[str, int] | None = None
    if not getattr(processor, "do_resize", True):
        raise refuse("does not resize (images of every size would reach the model)")
    if "height" in size and "width" in size:
        resize = {"height": int(size["height"]), "width": int(size["width"])}
    elif "shortest_edge" in size and set(size) == {"shortest_edge"}:
        edge = int(size["shortest_edge"])
        crop_pct = getattr(processor, "crop_pct", None)
        if name == "ConvNextImageProcessor":  # transformers' ConvNeXt rule: crop_pct below 384 pixels
            if edge < 384:
                resize, crop = {"shortest_edge": int(edge / (crop_pct or 224 / 256))}, {"height": edge, "width": edge}
            else:
                resize = {"height": edge, "width": edge}
        elif crop_pct is not None:
            raise refuse("sets crop_pct")
        else:
            resize = {"shortest_edge": edge}
    else:
        raise refuse(f"resizes to {size}")
    if getattr(processor, "do_center_crop", False) and crop is None:
        crop_size = dict(getattr(processor, "crop_size", None) or {})
        if set(crop_size) != {"height", "width"}:
            raise refuse(f"crops to {crop_size}")
        crop = {"height": int(crop_size["height"]), "width": int(crop_size["width"])}
    final = crop or resize
    if "shortest_edge" in final:
        raise refuse("keeps each image's aspect ratio without a crop (the model needs one size)")
    do_rescale, do_normalize = getattr(processor, "do_rescale", True), getattr(processor, "do_normalize", True)
    mean = [float(v) for v in (getattr(processor, "image_mean", None) or [0.5] * channels)] if do_normalize else [0.0] * channels
    std = [float(v) for v in (getattr(processor, "image_std", None) or [0.5] * channels)] if do_normalize else [1.0] * channels
    if len(mean) != channels or len(std) != channels:
        raise refuse(f"normalises {len(mean)} channels, and the model reads {channels}")
    return {"height": final["height"], "width": final["width"], "channels": channels,
            "resize": resize, "crop": crop, "resample": resample,
            "rescale_factor": float(getattr(processor, "rescale_factor", 1 / 255)) if do_rescale else 1.0,
            "rescale_offset": bool(getattr(processor, "rescale_offset", False)) and do_rescale,
            "mean": mean, "std": std,
            # EfficientNet's include_top divides by the std a second time
            "extra_std": std if getattr(processor, "include_top", False) else None}


def load_image(folder: Path, label_names: list[str], num_labels: int | None, seed: int) -> LoadedModel:
    """An image classifier from a transformers folder (head replaced when the label count differs)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    refuse_audio(folder, "image")
    raw = _read_config(folder)
    count, names = _num_labels(raw, label_names, num_labels)
    try:
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, use_fast=False)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        torch.manual_seed(seed)
        model, info = AutoModelForImageClassification.from_pretrained(
            folder, num_labels=count, ignore_mismatched_sizes=True, local_files_only=True,
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, output_loading_info=True)
    except Exception as exc:
        raise _load_failed(folder, exc) from exc
    settings = image_settings(processor, config, folder)
    height, width, channels = settings["height"], settings["width"], settings["channels"]
    sample = {"pixel_values": torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(seed))}
    inputs = [InputSpec("pixel_values", "float32", ["batch", channels, height, width])]
    preprocessing = Preprocessing(kind="image", settings=settings,
                                  files={"preprocessor_config.json": (folder / "preprocessor_config.json").read_bytes()})
    return LoadedModel(inputs=inputs, output="logits", num_outputs=count,
                       source={"kind": "transformers", "model_type": config.model_type},
                       module=PositionalModel(model, ["pixel_values"]), sample=sample, task_hint="image-classification",
                       label_names=names, preprocessing=preprocessing, new_parameters=_initialised(info))
