"""Audio features as Hugging Face feature extractors compute them, in numpy.

Three recipes cover the audio classifiers transformers ships: the normalised waveform
(Wav2Vec2FeatureExtractor: wav2vec2, HuBERT, WavLM, data2vec-audio, ...), Whisper's log-mel
spectrogram, and the Kaldi-style filter bank of the Audio Spectrogram Transformer. The window and
mel filters are computed once at export by transformers and stored in the artifact folder
(``audio_features.npz``), so the device needs neither transformers nor torch. :func:`power_mel` is
``transformers.audio_utils.spectrogram`` with the options these recipes use, framed with one
strided view instead of a Python loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fit_length(samples: np.ndarray, length: int, padding_value: float = 0.0) -> np.ndarray:
    """The clip cut to ``length`` samples, or padded at the end with ``padding_value``."""
    if len(samples) >= length:
        return samples[:length]
    return np.concatenate([samples, np.full(length - len(samples), padding_value, dtype=samples.dtype)])


def normalised_waveform(samples: np.ndarray, length: int, padding_value: float, normalize: bool) -> tuple[np.ndarray, int]:
    """Wav2Vec2FeatureExtractor with ``padding="max_length", truncation=True``: zero mean and unit
    variance over the clip's own samples, then padding; and the count of real samples."""
    clip = samples[:length].astype(np.float32)
    if normalize:
        clip = (clip - clip.mean()) / np.sqrt(clip.var() + 1e-7)
    return fit_length(clip.astype(np.float32), length, padding_value), len(clip)


def power_mel(waveform: np.ndarray, window: np.ndarray, mel_filters: np.ndarray, hop_length: int, fft_length: int,
              center: bool, preemphasis: float | None, remove_dc_offset: bool, mel_floor: float, log: str) -> np.ndarray:
    """The log mel power spectrogram [mels, frames] (float32), as transformers' ``spectrogram``
    with ``power=2.0`` computes it, including its complex64 rounding of the FFT."""
    frame_length = len(window)
    if center:
        waveform = np.pad(waveform, frame_length // 2, mode="reflect")
    waveform = waveform.astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(waveform, frame_length)[::hop_length].copy()
    if remove_dc_offset:
        frames -= frames.mean(axis=1, keepdims=True)
    if preemphasis is not None:
        frames[:, 1:] -= preemphasis * frames[:, :-1]
        frames[:, 0] *= 1 - preemphasis
    frames *= window.astype(np.float64)
    spectrum = np.fft.rfft(frames, n=fft_length).astype(np.complex64)
    power = np.abs(spectrum, dtype=np.float64) ** 2.0
    mel = np.maximum(mel_floor, mel_filters.T @ power.T)
    return np.asarray(np.log10(mel) if log == "log10" else np.log(mel), dtype=np.float32)


def whisper_log_mel(samples: np.ndarray, settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    """WhisperFeatureExtractor: the clip (normalised when the extractor says so) padded or cut to its 30 s, log10 mel spectrogram, the last
    frame dropped, clamped to 8 below its maximum and scaled to about [-1, 1]. [mels, frames]"""
    clip = normalised_waveform(samples, int(settings["samples"]), float(settings["padding_value"]),
                               bool(settings["normalize"]))[0]
    log_spec = power_mel(clip, arrays["window"], arrays["mel_filters"], int(settings["hop_length"]),
                         int(settings["fft_length"]), True, None, False, 1e-10, "log10")[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def kaldi_fbank(samples: np.ndarray, settings: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    """ASTFeatureExtractor without torchaudio: a Kaldi-style log filter bank of the whole clip
    (25 ms frames, 10 ms hop, pre-emphasis, DC offset removed), padded or cut to its frame count,
    normalised with the dataset mean and twice the std. [frames, mels]"""
    clip = fit_length(samples.astype(np.float32), max(len(samples), len(arrays["window"])))  # at least one frame
    fbank = power_mel(clip, arrays["window"], arrays["mel_filters"], int(settings["hop_length"]),
                      int(settings["fft_length"]), False, 0.97, True, float(np.finfo(np.float32).eps), "log").T
    frames = int(settings["frames"])
    fbank = fbank[:frames] if len(fbank) >= frames else np.pad(fbank, ((0, frames - len(fbank)), (0, 0)))
    if settings.get("mean") is not None:
        fbank = (fbank - settings["mean"]) / (settings["std"] * 2)
    return fbank.astype(np.float32)
