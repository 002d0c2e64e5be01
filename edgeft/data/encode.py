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
    """Decode, resize and normalise images like the model's image processor."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        settings = _preprocessing(manifest, "image")
        self.size = (int(settings["width"]), int(settings["height"]))
        self.channels = int(settings["channels"])
        self.rescale = float(settings["rescale_factor"])
        self.mean = np.array(settings["mean"], dtype=np.float32)[:, None, None]
        self.std = np.array(settings["std"], dtype=np.float32)[:, None, None]

    def load(self, path: Path) -> np.ndarray:
        """float32 [C, H, W]: RGB (grey for one channel), bilinear resize, rescale, then (x - mean) / std."""
        from PIL import Image  # only image models pay for importing Pillow

        try:
            with Image.open(path) as image:
                pixels = image.convert("L" if self.channels == 1 else "RGB").resize(self.size, Image.BILINEAR)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise EdgeftError(f"{path} cannot be read as an image: {exc}.", where=str(path),
                              hint="replace or remove the file.") from exc
        except MemoryError as exc:  # a size under Pillow's decompression-bomb limit can still be too large here
            raise EdgeftError(f"{path} is too large to decode on this machine (not enough memory).", where=str(path),
                              hint="shrink or remove the image.") from exc
        array = np.asarray(pixels, dtype=np.float32).reshape(self.size[1], self.size[0], -1) * self.rescale
        return ((array.transpose(2, 0, 1) - self.mean) / self.std).astype(np.float32)
