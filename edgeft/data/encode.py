"""Turning records into model inputs exactly as the exported model expects them.

The settings come from the manifest's ``preprocessing`` (written at export from the model's own
tokenizer or image processor), so the device reproduces the host's preprocessing with the
``tokenizers`` library and pillow alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edgeft.errors import EdgeftError
from edgeft.manifest import IMAGE_RESAMPLING


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
