"""WAV files read and resampled with numpy alone (no soundfile, librosa or torch on the device).

A small RIFF reader takes what recorders and speech synthesisers write: PCM of 8, 16, 24 or 32
bits, 32- or 64-bit float, in plain or WAVE_FORMAT_EXTENSIBLE headers, any number of channels
(mixed to mono), from a header walked chunk by chunk, so only the samples a model hears are read.
Python's ``wave`` module reads PCM only, and compressed formats need a codec library, so those
are refused by name. Resampling is band-limited sinc interpolation with a Hann window (the
method of torchaudio's ``resample``).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from edgeft.errors import EdgeftError

AUDIO_SUFFIXES = (".wav", ".wave")
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_MAX_BYTES = 1 << 31  # a data chunk above 2 GiB is not a clip
RATES = (1000, 768_000)  # sampling rates a recording may have (a header outside them is damaged)


def read_wav(path: Path | str, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """The clip as float32 mono samples in [-1, 1] (channels averaged) and its sampling rate;
    with ``max_seconds`` only its start is read, so a long recording costs no more than the model hears."""
    path = Path(path)

    def refuse(what: str) -> EdgeftError:
        return EdgeftError(f"{path} cannot be read as a WAV file: {what}.", where=str(path),
                           hint="give PCM or float WAV files (convert others, e.g. with ffmpeg -i IN -ar 16000 OUT.wav), "
                                "or remove the file.")

    try:
        with path.open("rb") as stream:
            fmt, data_at, data_size, file_size = _chunks(stream, refuse)
            tag, channels, rate, bits = fmt
            if not channels or not RATES[0] <= rate <= RATES[1]:
                raise refuse(f"it declares {channels} channel(s) at {rate} Hz (edgeft reads {RATES[0]} to {RATES[1]} Hz)")
            width = channels * max(bits // 8, 1)
            size = min(data_size, file_size - data_at)  # a size past the end (an unfinished stream) keeps what is there
            if max_seconds is not None:
                size = min(size, (int(max_seconds * rate) + 1) * width)
            if size > _MAX_BYTES:
                raise refuse("its data chunk is larger than 2 GiB")
            stream.seek(data_at)
            data = stream.read(size)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from exc
    samples = _decode(data, tag, bits, refuse)
    frames = len(samples) // channels
    if not frames:
        raise refuse("it holds no samples")
    mono = samples[:frames * channels].reshape(frames, channels).mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise refuse("it holds NaN or infinite samples")
    return mono.astype(np.float32), int(rate)


def _chunks(stream, refuse) -> tuple[tuple[int, int, int, int], int, int, int]:  # noqa: ANN001
    """(format tag, channels, rate, bits), the data chunk's offset and size, and the file size:
    the first fmt and data chunks (a streaming writer may leave the data size 0 or 0xFFFFFFFF)."""
    head = stream.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        raise refuse("it has no RIFF/WAVE header")
    if head[:4] == b"RIFX":
        raise refuse("it is big-endian (RIFX)")
    file_size = stream.seek(0, 2)
    offset, fmt, data = 12, None, None
    while offset + 8 <= file_size and (fmt is None or data is None):
        stream.seek(offset)
        chunk, size = struct.unpack("<4sI", stream.read(8))
        if chunk == b"fmt " and fmt is None:
            body = stream.read(min(size, 64))
            if len(body) < 16:
                raise refuse("its fmt chunk is too short")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE:
                if len(body) < 26:
                    raise refuse("its extensible fmt chunk is too short to name its sample format")
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID starts with the format tag
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data" and data is None:
            data = (offset + 8, size if 0 < size < 0xFFFFFFFF else file_size - offset - 8)
        offset += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise refuse("it lacks a " + ("fmt" if fmt is None else "data") + " chunk")
    return fmt, data[0], data[1], file_size


def _decode(data: bytes, tag: int, bits: int, refuse) -> np.ndarray:  # noqa: ANN001
    """Interleaved samples as float32 in [-1, 1]."""
    if tag == _FLOAT and bits in (32, 64):
        return np.frombuffer(data[:len(data) // (bits // 8) * (bits // 8)], f"<f{bits // 8}").astype(np.float32)
    if tag != _PCM:
        kind = "float" if tag == _FLOAT else f"format {tag:#06x} (compressed)"
        raise refuse(f"it is {kind} audio of {bits} bits")
    if bits == 8:  # unsigned, centred on 128
        return (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    if bits == 24:
        triples = np.frombuffer(data[:len(data) // 3 * 3], np.uint8).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        return (np.where(values >= 1 << 23, values - (1 << 24), values) / float(1 << 23)).astype(np.float32)
    if bits in (16, 32):
        width = bits // 8
        values = np.frombuffer(data[:len(data) // width * width], f"<i{width}")
        return (values.astype(np.float64 if bits == 32 else np.float32) / float(1 << (bits - 1))).astype(np.float32)
    raise refuse(f"it is PCM of {bits} bits")


def resample(samples: np.ndarray, rate: int, target: int, zero_crossings: int = 16, rolloff: float = 0.9,
             block: int = 8192) -> np.ndarray:
    """``samples`` at ``rate`` Hz resampled to ``target`` Hz, length ceil(n * target / rate).

    Each output sample is the sum of the input samples around its time weighted by a Hann-windowed
    sinc cut off at ``rolloff`` times the lower Nyquist frequency (torchaudio's kernel, with 16
    lobes each side instead of its 6): flat (within 0.05 dB) to 0.8 of the new Nyquist frequency,
    -3 dB at 0.875, and below -40 dB everywhere past it (what would alias back). Outputs go in blocks, so memory follows the clip's length whatever
    the two rates are; when their reduced ratio has few phases (22.05 or 44.1 kHz to 16 kHz),
    each phase's weights are computed once.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target:
        return samples
    cutoff = min(rate, target) * rolloff
    width = math.ceil(zero_crossings * rate / cutoff) + 1  # input samples each side of an output's time
    offsets = np.arange(-width, width + 1)

    def weights(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first input tap of each output, and the taps' weights."""
        times = outputs * (rate / target)  # in input samples
        first = np.floor(times).astype(np.int64)
        t = np.clip((first[:, None] + offsets[None, :] - times[:, None]) * (cutoff / rate), -zero_crossings,
                    zero_crossings)
        with np.errstate(invalid="ignore", divide="ignore"):
            sinc = np.where(t == 0, 1.0, np.sin(t * math.pi) / (t * math.pi))
        return first, (sinc * np.cos(t * math.pi / zero_crossings / 2) ** 2 * (cutoff / rate)).astype(np.float32)

    phases = target // math.gcd(rate, target)
    table = weights(np.arange(phases, dtype=np.float64))[1] if phases <= 4096 else None
    length = math.ceil(len(samples) * target / rate)
    padded = np.pad(samples, (width, width + 1))
    out = np.empty(length, dtype=np.float32)
    for start in range(0, length, block):
        outputs = np.arange(start, min(start + block, length), dtype=np.int64)
        if table is not None:  # output n = m * phases + p starts m * (rate / gcd) samples after output p
            first, taps = (outputs * rate) // target, table[outputs % phases]
        else:
            first, taps = weights(outputs.astype(np.float64))
        out[start:start + len(outputs)] = (padded[first[:, None] + offsets[None, :] + width] * taps).sum(axis=1)
    return out
