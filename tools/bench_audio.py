#!/usr/bin/env python
"""Device-side audio preprocessing speed against transformers' own feature extractors, in one run.

For each recipe (Wav2Vec2's normalised waveform, Whisper's log-mel spectrogram of 30 s windows,
AST's Kaldi filter bank) the same WAV clips (speech-like noise at 22.05 kHz, so edgeft also
resamples them) go through edgeft's AudioEncoder and through the transformers extractor (numpy
path, given samples already at 16 kHz: the baseline does less). Prints clips per second of
each and their ratio, and the largest difference of the features.

Usage: python tools/bench_audio.py [--clips 20] [--seconds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    import wave

    from transformers import ASTFeatureExtractor, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    from edgeft.data.encode import AudioEncoder
    from edgeft.data.wav import read_wav, resample
    from edgeft.exporting.hf_audio import _inputs, audio_settings

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for index in range(args.clips):
            t = np.arange(int(args.seconds * 22050)) / 22050
            clip = 0.3 * np.sin(2 * np.pi * (150 + 50 * index) * t) * (1 + np.sin(2 * np.pi * 3 * t)) \
                + 0.05 * rng.standard_normal(len(t))
            paths.append(folder / f"{index}.wav")
            with wave.open(str(paths[-1]), "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(22050)
                out.writeframes((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes())
        at_16k = [resample(read_wav(p)[0], 22050, 16000) for p in paths]
        print("| recipe | edgeft clips/s (read + resample + features) | transformers clips/s (features) | ratio | "
              "max difference |")
        print("|---|---|---|---|---|")
        for name, extractor, call in (
                ("Wav2Vec2 waveform, 1 s", Wav2Vec2FeatureExtractor(),
                 {"padding": "max_length", "max_length": 16000, "truncation": True, "return_attention_mask": True}),
                ("Whisper log-mel, 30 s", WhisperFeatureExtractor(), {}),
                ("AST filter bank, 1024 frames", ASTFeatureExtractor(), {})):
            settings, arrays = audio_settings(extractor, folder, None)
            if arrays:
                np.savez(folder / "audio_features.npz", **arrays)
            specs = [s.as_dict() for s in _inputs(settings)]
            encoder = AudioEncoder(folder, {"modality": "audio", "preprocessing": {"kind": "audio", **settings},
                                            "inputs": specs})
            start = time.perf_counter()
            ours = np.concatenate([encoder.inputs([p])[specs[0]["name"]] for p in paths])
            mine = time.perf_counter() - start
            start = time.perf_counter()
            if isinstance(extractor, WhisperFeatureExtractor):  # its numpy path (the default takes torch)
                theirs = np.concatenate([extractor._np_extract_fbank_features(
                    np.pad(a, (0, extractor.n_samples - len(a)))[None], "cpu") for a in at_16k])
            else:
                theirs = np.concatenate([extractor(a, sampling_rate=16000, return_tensors="np", **call)[specs[0]["name"]]
                                         for a in at_16k])
            base = time.perf_counter() - start
            print(f"| {name} | {args.clips / mine:.1f} | {args.clips / base:.1f} | {base / mine:.2f}x | "
                  f"{float(np.abs(ours - theirs).max()):.1e} |")


if __name__ == "__main__":
    main()
