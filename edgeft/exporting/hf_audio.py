"""Hugging Face audio classifiers: Wav2Vec2, HuBERT, WavLM, Whisper's encoder, the Audio
Spectrogram Transformer, with their feature extractors.

The feature extractor's settings go to the manifest and its window and mel filters to
``audio_features.npz``, so the device computes the same features with numpy (see
:mod:`edgeft.data.spectrogram`). Models that read the waveform take clips of one fixed length
(``clip_seconds``, 1 s by default: keyword spotting's), padded or cut; Whisper reads its 30 s
windows and AST its fixed number of frames, as they were trained.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeft.errors import EdgeftError
from edgeft.exporting.hf_source import _initialised, _load_failed, _num_labels, _read_config
from edgeft.exporting.source import InputSpec, LoadedModel, Preprocessing
from edgeft.exporting.torch_export import PositionalModel
from edgeft.manifest import AUDIO_FEATURE_FILE as FEATURE_FILE

DEFAULT_CLIP_SECONDS = 1.0
SUPPORTED = ("Wav2Vec2FeatureExtractor", "WhisperFeatureExtractor", "ASTFeatureExtractor")


def audio_settings(extractor: Any, folder: Path, clip_seconds: float | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The manifest's preprocessing for ``extractor`` and the arrays its spectrogram needs."""
    from transformers.audio_utils import mel_filter_bank, window_function

    name = type(extractor).__name__
    where = str(folder / "preprocessor_config.json")

    def refuse(what: str) -> EdgeftError:
        return EdgeftError(f"The feature extractor ({name}) {what}, which edgeft's device-side feature extraction does "
                           "not reproduce.", where=where,
                           hint=f"edgeft reads {', '.join(SUPPORTED)} settings; export the model as ONNX taking "
                                "features, or change the setting in preprocessor_config.json.")

    if name not in SUPPORTED:
        raise refuse("is not one edgeft knows")
    if int(getattr(extractor, "feature_size", 1) if name == "Wav2Vec2FeatureExtractor" else 1) != 1:
        raise refuse(f"reads {extractor.feature_size} channels")
    if float(getattr(extractor, "dither", 0.0) or 0.0):
        raise refuse("adds dither (random noise)")
    if getattr(extractor, "padding_side", "right") != "right":
        raise refuse(f"pads on the {extractor.padding_side}")
    rate = int(extractor.sampling_rate)
    padding = float(getattr(extractor, "padding_value", 0.0))
    if clip_seconds is not None and name != "Wav2Vec2FeatureExtractor":
        model = "Whisper reads 30 s windows" if name == "WhisperFeatureExtractor" else \
            f"AST reads {extractor.max_length} frames"
        raise EdgeftError(f"--clip-seconds sets the clip length of models that read the waveform; {model}.",
                          where="--clip-seconds", hint="leave out --clip-seconds for this model.")
    base = {"sampling_rate": rate, "padding_value": padding}
    if name == "Wav2Vec2FeatureExtractor":
        # normalised over the clip's own samples, then padded with silence: what the extractor does for one
        # clip (the audio-classification pipeline's call), or for a batch when it returns an attention mask
        seconds = DEFAULT_CLIP_SECONDS if clip_seconds is None else clip_seconds
        if not 0.05 <= seconds <= 600:
            raise EdgeftError(f"--clip-seconds {seconds} is outside 0.05 to 600.", where="--clip-seconds",
                              hint="give the length of the clips the model should hear, e.g. 1 or 5.")
        return {**base, "features": "waveform", "samples": int(round(seconds * rate)),
                "normalize": bool(extractor.do_normalize),
                "attention_mask": bool(extractor.return_attention_mask)}, {}
    if name == "WhisperFeatureExtractor":
        window = window_function(int(extractor.n_fft), "hann")
        return ({**base, "features": "whisper-log-mel", "samples": int(extractor.n_samples),
                 # WhisperFeatureExtractor normalises only when its call asks (a do_normalize key in the config
                 # is ignored), and neither the pipeline nor training calls ask
                 "normalize": False, "hop_length": int(extractor.hop_length),
                 "fft_length": int(extractor.n_fft), "mels": int(extractor.feature_size),
                 "frames": int(extractor.nb_max_frames), "file": FEATURE_FILE},
                {"window": window, "mel_filters": np.asarray(extractor.mel_filters, dtype=np.float64)})
    # ASTFeatureExtractor's numpy path (the one it takes without torchaudio)
    mel_filters = getattr(extractor, "mel_filters", None)
    if mel_filters is None:
        mel_filters = mel_filter_bank(num_frequency_bins=257, num_mel_filters=int(extractor.num_mel_bins),
                                      min_frequency=20, max_frequency=rate // 2, sampling_rate=rate, norm=None,
                                      mel_scale="kaldi", triangularize_in_mel_space=True)
    normalize = bool(extractor.do_normalize)
    return ({**base, "features": "kaldi-fbank", "hop_length": 160, "fft_length": 512,
             "mels": int(extractor.num_mel_bins), "frames": int(extractor.max_length),
             "mean": float(extractor.mean) if normalize else None, "std": float(extractor.std) if normalize else None,
             "file": FEATURE_FILE},
            {"window": window_function(400, "hann", periodic=False), "mel_filters": np.asarray(mel_filters, np.float64)})


def _inputs(settings: dict[str, Any]) -> list[InputSpec]:
    """The model inputs the features make (and the names the transformers model takes)."""
    if settings["features"] == "waveform":
        specs = [InputSpec("input_values", "float32", ["batch", settings["samples"]])]
        if settings["attention_mask"]:
            specs.append(InputSpec("attention_mask", "int64", ["batch", settings["samples"]]))
        return specs
    if settings["features"] == "whisper-log-mel":
        return [InputSpec("input_features", "float32", ["batch", settings["mels"], settings["frames"]])]
    return [InputSpec("input_values", "float32", ["batch", settings["frames"], settings["mels"]])]


def load_audio(folder: Path, label_names: list[str], num_labels: int | None, seed: int,
               clip_seconds: float | None = None) -> LoadedModel:
    """An audio classifier from a transformers folder (head replaced when the label count differs)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

    raw = _read_config(folder)
    count, names = _num_labels(raw, label_names, num_labels)
    try:
        extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        torch.manual_seed(seed)
        model, info = AutoModelForAudioClassification.from_pretrained(
            folder, num_labels=count, ignore_mismatched_sizes=True, local_files_only=True,
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, output_loading_info=True,
            attn_implementation="eager")
    except EdgeftError:
        raise
    except Exception as exc:
        raise _load_failed(folder, exc) from exc
    settings, arrays = audio_settings(extractor, folder, clip_seconds)
    inputs = _inputs(settings)
    generator = torch.Generator().manual_seed(seed)
    sample = {spec.name: torch.randn([2, *spec.shape[1:]], generator=generator) if spec.dtype == "float32"
              else torch.ones([2, *spec.shape[1:]], dtype=torch.int64) for spec in inputs}
    files = {"preprocessor_config.json": (folder / "preprocessor_config.json").read_bytes()}
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        files[FEATURE_FILE] = buffer.getvalue()
    seconds = settings.get("samples", 0) / settings["sampling_rate"]
    notes = [f"audio: {settings['features']} features at {settings['sampling_rate']} Hz"
             + (f", clips of {seconds:g} s (padded or cut)" if "samples" in settings else
                f", {settings['frames']} frames (padded or cut)")]
    return LoadedModel(inputs=inputs, output="logits", num_outputs=count,
                       source={"kind": "transformers", "model_type": config.model_type},
                       module=PositionalModel(model, [spec.name for spec in inputs]), sample=sample,
                       task_hint="audio-classification", label_names=names,
                       preprocessing=Preprocessing(kind="audio", settings=settings, files=files), notes=notes,
                       new_parameters=_initialised(info))
