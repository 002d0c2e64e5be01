"""Turning records into model inputs exactly as the exported model expects them.

The settings come from the manifest's ``preprocessing`` (written at export from the model's own
tokenizer, image processor or feature extractor), so the device reproduces the host's
preprocessing with the ``tokenizers`` library, pillow and numpy alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edgeft.data.spectrogram import kaldi_fbank, normalised_waveform, whisper_log_mel
from edgeft.data.wav import read_wav, resample
from edgeft.errors import EdgeftError
from edgeft.manifest_fields import IMAGE_RESAMPLING


def _preprocessing(manifest: dict[str, Any], kind: str) -> dict[str, Any]:
    settings = manifest.get("preprocessing") or {}
    if settings.get("kind") != kind:
        raise EdgeftError(f"This model has no {kind} preprocessing (it has {settings.get('kind', 'none')!r}).",
                          where="manifest.json", hint="give data that matches the model's inputs (see edgeft inspect).")
    return settings


class TextEncoder:
    """Tokenize with the artifact folder's tokenizer.json (tokenizers library), truncate to max_length."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        settings = _preprocessing(manifest, "tokenizer")
        path = Path(folder) / settings["file"]
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for missing and malformed files
            raise EdgeftError(f"The tokenizer cannot be loaded: {exc}.", where=str(path),
                              hint="the artifact folder is incomplete; copy it again or re-export it.") from exc
        self.max_length = int(settings["max_length"])
        self.pad_token_id = int(settings["pad_token_id"])
        # Truncation here counts the special tokens, so [SEP] survives; padding is done per batch.
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text (int64, special tokens added, at most max_length long)."""
        return [np.array(encoding.ids, dtype=np.int64) for encoding in self.tokenizer.encode_batch(texts)]

    def pad(self, ids: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One batch padded to its longest sequence, which wastes less compute than padding to max_length."""
        length = max((len(seq) for seq in ids), default=0)
        input_ids = np.full((len(ids), length), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), length), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = seq
            attention_mask[row, :len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class ImageEncoder:
    """Decode, resize, crop and normalise images as the model's image processor does (transformers'
    PIL-based processors: the same pillow resize, centre crop, rescale and normalisation)."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        settings = _preprocessing(manifest, "image")
        self.name = manifest["inputs"][0]["name"] if manifest.get("inputs") else "pixel_values"
        self.size = (int(settings["width"]), int(settings["height"]))
        self.channels = int(settings["channels"])
        # artifacts written before these settings resize straight to the model's size, bilinear
        self.resize = settings.get("resize") or {"height": self.size[1], "width": self.size[0]}
        self.crop = settings.get("crop")
        self.resample = settings.get("resample", "bilinear")
        self.rescale = float(settings["rescale_factor"])
        self.offset = bool(settings.get("rescale_offset", False))
        self.mean = np.array(settings["mean"], dtype=np.float32)[:, None, None]
        self.std = np.array(settings["std"], dtype=np.float32)[:, None, None]
        extra = settings.get("extra_std")
        self.extra_std = np.array(extra, dtype=np.float32)[:, None, None] if extra else None

    def _target(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the resize: fixed, or the shortest edge with the aspect ratio kept."""
        if "shortest_edge" not in self.resize:
            return int(self.resize["width"]), int(self.resize["height"])
        edge = int(self.resize["shortest_edge"])
        if width <= height:
            return edge, int(edge * height / width)
        return int(edge * width / height), edge

    def load(self, path: Path) -> np.ndarray:
        """float32 [C, H, W]: RGB (grey for one channel), resized, centre-cropped, rescaled, normalised."""
        from PIL import Image  # only image models pay for importing Pillow

        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                pixels = image.resize(self._target(*image.size), RESAMPLING[self.resample])
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise EdgeftError(f"{path} cannot be read as an image: {exc}.", where=str(path),
                              hint="replace or remove the file.") from exc
        except MemoryError as exc:  # a size under Pillow's decompression-bomb limit can still be too large here
            raise EdgeftError(f"{path} is too large to decode on this machine (not enough memory).", where=str(path),
                              hint="shrink or remove the image.") from exc
        array = np.asarray(pixels).reshape(pixels.size[1], pixels.size[0], -1).transpose(2, 0, 1)
        if self.crop is not None:
            array = center_crop(array, int(self.crop["height"]), int(self.crop["width"]))
        values = (array.astype(np.float64) * self.rescale).astype(np.float32)
        if self.offset:
            values = values - np.float32(1.0)
        values = (values - self.mean) / self.std
        if self.extra_std is not None:
            values = values / self.extra_std
        return values.astype(np.float32)


    def inputs(self, paths: list[Path]) -> dict[str, np.ndarray]:
        """The model input of a batch of image files."""
        return {self.name: np.stack([self.load(Path(p)) for p in paths])}


class AudioEncoder:
    """Read WAV clips, resample them to the model's rate and compute its features as the model's
    feature extractor does (see :mod:`edgeft.data.spectrogram`)."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.settings = _preprocessing(manifest, "audio")
        self.name = manifest["inputs"][0]["name"]
        self.rate = int(self.settings["sampling_rate"])
        self.arrays: dict[str, np.ndarray] = {}
        if self.settings["features"] != "waveform":
            path = Path(folder) / self.settings["file"]
            try:
                with np.load(path, allow_pickle=False) as archive:
                    self.arrays = {name: archive[name] for name in ("window", "mel_filters")}
            except Exception as exc:  # numpy and zipfile raise many types for a missing or damaged archive
                raise EdgeftError(f"The audio feature tables cannot be read: {str(exc)[:200]}.", where=str(path),
                                  hint="the folder is incomplete; copy it again or re-export it.") from exc
            window, filters = self.arrays["window"], self.arrays["mel_filters"]
            bins = int(self.settings["fft_length"]) // 2 + 1
            if window.ndim != 1 or not 0 < len(window) <= int(self.settings["fft_length"]) or \
                    filters.shape != (bins, int(self.settings["mels"])) or \
                    not (np.isfinite(window).all() and np.isfinite(filters).all()):
                raise EdgeftError(f"The audio feature tables do not fit the manifest (window {list(window.shape)}, mel "
                                  f"filters {list(filters.shape)}; expected [{bins}, {self.settings['mels']}] filters).",
                                  where=str(path), hint="re-export the model; do not edit the folder by hand.")
        # the samples the features read at the model's rate (the rest of a long recording is never decoded)
        if self.settings["features"] == "kaldi-fbank":
            self.needed = (int(self.settings["frames"]) - 1) * int(self.settings["hop_length"]) + len(self.arrays["window"])
        else:
            self.needed = int(self.settings["samples"])

    def load(self, path: Path) -> dict[str, np.ndarray]:
        """The model inputs of one clip: the features, and the count of real samples."""
        # the margin keeps the resampling kernel's reach: the kept samples equal those of the whole clip
        samples, rate = read_wav(path, max_seconds=self.needed / self.rate + 0.05)
        samples = resample(samples, rate, self.rate)[:self.needed]
        settings = self.settings
        if settings["features"] == "waveform":
            values, real = normalised_waveform(samples, int(settings["samples"]), float(settings["padding_value"]),
                                               bool(settings["normalize"]))
            return {"values": values, "real": np.int64(real)}
        compute = whisper_log_mel if settings["features"] == "whisper-log-mel" else kaldi_fbank
        return {"values": compute(samples, settings, self.arrays)}

    def inputs(self, paths: list[Path]) -> dict[str, np.ndarray]:
        """The model inputs of a batch of WAV files (with the attention mask the model may take)."""
        clips = [self.load(Path(p)) for p in paths]
        feed = {self.name: np.stack([clip["values"] for clip in clips])}
        if self.settings.get("attention_mask"):
            length = feed[self.name].shape[1]
            feed["attention_mask"] = (np.arange(length)[None, :] < np.array([c["real"] for c in clips])[:, None]) \
                .astype(np.int64)
        return feed


def file_encoder(folder: Path, manifest: dict[str, Any]) -> ImageEncoder | AudioEncoder:
    """The encoder of a model that reads files: images or WAV clips."""
    return AudioEncoder(folder, manifest) if manifest["modality"] == "audio" else ImageEncoder(manifest)


RESAMPLING = {name: number for number, name in enumerate(IMAGE_RESAMPLING)}  # pillow's numbers for its filters


def center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre ``height`` x ``width`` of a [C, H, W] array, padded with zeros where the image is
    smaller (transformers' rule: the top-left offset rounds down)."""
    channels, rows, columns = array.shape
    padded_rows, padded_columns = max(rows, height), max(columns, width)
    if (padded_rows, padded_columns) != (rows, columns):
        canvas = np.zeros((channels, padded_rows, padded_columns), dtype=array.dtype)
        top, left = -(-(padded_rows - rows) // 2), -(-(padded_columns - columns) // 2)
        canvas[:, top:top + rows, left:left + columns] = array
        array = canvas
    top, left = (array.shape[1] - height) // 2, (array.shape[2] - width) // 2
    return array[:, top:top + height, left:left + width]
