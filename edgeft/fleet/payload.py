"""What a device sends back after a round: its trainable tensors, or a compressed update.

``fp32`` sends the tensors as they are (what every Flower strategy expects). ``fp16`` and
``int8`` send the update (new minus the global values the round started from), the first cast to
half precision, the second quantized symmetrically per tensor (one float32 scale each, sent as a
last array), a half and a quarter of the bytes. The server turns an update back into tensors
before the strategy sees it (``decode``), so FedAvg, FedProx, FedAdam, ... aggregate as usual.
Updates are small and centred on zero, which is why they survive quantization far better than
the weights themselves would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ENCODINGS = ("fp32", "fp16", "int8")


def encode(new: Sequence[np.ndarray], start: Sequence[np.ndarray], encoding: str) -> list[np.ndarray]:
    """The arrays a device sends for trained tensors ``new`` that started the round at ``start``."""
    if encoding == "fp32":
        return [np.asarray(value, dtype=np.float32) for value in new]
    deltas = [np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32) for a, b in zip(new, start, strict=True)]
    if encoding == "fp16":
        return [delta.astype(np.float16) for delta in deltas]
    if encoding == "int8":
        # a non-finite update keeps a non-finite scale, so the server sees it (and refuses it) when decoding
        scales = np.array([float(np.abs(delta).max()) / 127.0 if delta.size else 0.0 for delta in deltas],
                          dtype=np.float32)
        with np.errstate(invalid="ignore"):
            codes = [np.clip(np.nan_to_num(np.rint(delta / scale)), -127, 127).astype(np.int8)
                     if scale > 0 and np.isfinite(scale) else np.zeros(delta.shape, np.int8)
                     for delta, scale in zip(deltas, scales)]
        return [*codes, scales]
    raise ValueError(f"unknown encoding {encoding!r}")


def decode(sent: Sequence[np.ndarray], start: Sequence[np.ndarray], encoding: str) -> list[np.ndarray]:
    """The trained tensors a device's ``sent`` arrays stand for (the inverse of :func:`encode`)."""
    if encoding == "fp32":
        return [np.asarray(value, dtype=np.float32) for value in sent]
    if encoding == "fp16":
        return [np.asarray(b, np.float32) + np.asarray(d, np.float32) for d, b in zip(sent, start, strict=True)]
    if encoding == "int8":
        *codes, scales = sent
        if len(codes) != len(start) or np.asarray(scales).shape != (len(start),):
            raise ValueError("an int8 update of another model")
        # a non-finite scale decodes to non-finite tensors, which the server refuses
        return [np.asarray(b, np.float32) + code.astype(np.float32) * scale
                for code, scale, b in zip(codes, np.asarray(scales, np.float32), start)]
    raise ValueError(f"unknown encoding {encoding!r}")


def nbytes(arrays: Sequence[np.ndarray]) -> int:
    """The payload's size: the arrays' bytes (Flower's framing adds a few bytes per array)."""
    return int(sum(np.asarray(array).nbytes for array in arrays))
