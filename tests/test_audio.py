"""Audio classification: WAV files read and resampled with numpy, features equal to the Hugging
Face feature extractors', random-weight Wav2Vec2 / HuBERT / Whisper / AST classifiers through
export, training, deployment and prediction, and keyword spotting on speech that espeak-ng
synthesises (several voices and speeds per word; skipped where espeak-ng is not installed)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

import architectures
from reliability_faults import failed_cleanly, run_edgeft
from edgeft.data.encode import AudioEncoder
from edgeft.data.wav import read_wav, resample
from edgeft.errors import EdgeftError

RATE = architectures.AUDIO_RATE
WORDS = ["down", "go", "left", "yes"]
TRAIN_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
HELD_OUT_VOICES = ["en-us+f3", "en-gb-x-gbcwmd"]  # voices training never hears


def riff(payload: bytes, tag: int, channels: int, rate: int, bits: int, extensible: bool = False) -> bytes:
    """A WAV file of ``payload`` (interleaved samples) in a plain or WAVE_FORMAT_EXTENSIBLE header."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:  # cbSize, valid bits, channel mask, sub-format GUID (format tag + the standard suffix)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + bytes.fromhex("000000001000800000aa00389b71")
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\0" \
        + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(seconds: float, rate: int, hertz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hertz * t)).astype(np.float32)


def write_pcm16(path: Path, samples: np.ndarray, rate: int) -> Path:
    """A mono 16-bit WAV written with Python's wave module (an independent writer)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


# ---- reading and resampling ----------------------------------------------------------------------

def test_every_pcm_and_float_layout_reads_as_the_same_samples(tmp_path):
    signal = tone(0.05, 8000)
    stereo = np.stack([signal, -0.5 * signal], axis=1)  # channels average to signal / 4
    scaled = {8: (np.round(stereo * 127) + 128).astype(np.uint8).tobytes(),
              16: np.round(stereo * 32767).astype("<i2").tobytes(),
              32: np.round(stereo * (2**31 - 1)).astype("<i4").tobytes()}
    ints = np.round(stereo * (2**23 - 1)).astype(np.int64).reshape(-1) & 0xFFFFFF
    scaled[24] = np.stack([ints & 0xFF, (ints >> 8) & 0xFF, ints >> 16], axis=1).astype(np.uint8).tobytes()
    cases = [(1, bits, data, 1.5 / 2 ** (bits - 1)) for bits, data in scaled.items()]
    cases += [(3, 32, stereo.astype("<f4").tobytes(), 1e-7), (3, 64, stereo.astype("<f8").tobytes(), 1e-7)]
    for tag, bits, data, tolerance in cases:
        for extensible in (False, True):
            path = tmp_path / f"{tag}-{bits}-{extensible}.wav"
            path.write_bytes(riff(data, tag, 2, 8000, bits, extensible))
            samples, rate = read_wav(path)
            assert rate == 8000 and samples.dtype == np.float32
            np.testing.assert_allclose(samples, signal / 4, atol=tolerance, err_msg=path.name)
    samples, rate = read_wav(write_pcm16(tmp_path / "wave.wav", signal, 8000))
    np.testing.assert_allclose(samples, signal, atol=3 / 32767)  # truncated to 16 bits, scaled by 32767


@pytest.mark.parametrize("content, problem", [
    (b"", "no RIFF/WAVE header"),
    (b"OggS" + bytes(40), "no RIFF/WAVE header"),
    (riff(bytes(64), 2, 1, 8000, 4), "compressed"),  # MS ADPCM
    (riff(bytes(64), 1, 1, 8000, 12), "PCM of 12 bits"),
    (riff(bytes(64), 1, 0, 8000, 16), "0 channel(s)"),
    (riff(b"", 1, 1, 8000, 16), "no samples"),
    (riff(b"", 1, 1, 8000, 16)[:36], "lacks a data chunk"),
    (riff(np.full(8, np.nan, "<f4").tobytes(), 3, 1, 8000, 32), "NaN"),
    (riff(bytes(64), 1, 1, 100, 16), "at 100 Hz"),  # a damaged rate would make resampling enormous
    (riff(bytes(64), 1, 1, 2_000_000, 16), "at 2000000 Hz"),
    (b"RIFF" + struct.pack("<I", 42) + b"WAVEfmt " + struct.pack("<IHHIIHHH", 18, 0xFFFE, 1, 8000, 16000, 2, 16, 0)
     + b"data" + struct.pack("<I", 4) + bytes(4), "too short to name its sample format"),
])
def test_a_damaged_or_unsupported_wav_is_refused_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "clip.wav"
    path.write_bytes(content)
    with pytest.raises(EdgeftError) as caught:
        read_wav(path)
    assert problem in caught.value.what and caught.value.where == str(path), caught.value.what


def test_the_first_chunks_count_an_unfinished_stream_reads_to_the_end_and_long_files_only_their_start(tmp_path):
    first = np.round(tone(0.5, 8000) * 32767).astype("<i2").tobytes()
    file = bytearray(riff(first, 1, 1, 8000, 16))
    file += b"data" + struct.pack("<I", 4) + bytes(4) + b"fmt " + struct.pack("<I", 16) + bytes(16)  # later chunks
    path = tmp_path / "two.wav"
    path.write_bytes(bytes(file))
    samples, rate = read_wav(path)
    assert rate == 8000 and len(samples) == 4000
    streamed = bytearray(riff(first, 1, 1, 8000, 16))
    at = streamed.index(b"data") + 4
    streamed[at:at + 4] = struct.pack("<I", 0)  # a writer that never came back to fill in the size
    path.write_bytes(bytes(streamed))
    assert len(read_wav(path)[0]) == 4000
    start, _ = read_wav(path, max_seconds=0.1)
    assert 800 <= len(start) <= 801 and np.array_equal(start, samples[: len(start)])


def test_truncated_and_garbled_wav_files_fail_only_with_edgeft_errors(tmp_path):
    """Every prefix and many byte flips of a valid file: a clip or one clear error, never a crash."""
    valid = riff(np.round(tone(0.01, 8000) * 32767).astype("<i2").tobytes(), 1, 1, 8000, 16)
    rng = np.random.default_rng(0)
    variants = [valid[:n] for n in range(len(valid))]
    for _ in range(300):
        garbled = bytearray(valid)
        for index in rng.integers(0, len(valid), size=3):
            garbled[index] = rng.integers(0, 256)
        variants.append(bytes(garbled))
    path = tmp_path / "clip.wav"
    for content in variants:
        path.write_bytes(content)
        try:
            samples, rate = read_wav(path)
        except EdgeftError:
            continue
        assert samples.dtype == np.float32 and samples.ndim == 1 and rate > 0


def test_resampling_keeps_the_band_and_removes_what_the_new_rate_cannot_hold():
    for rate, target in ((44100, 16000), (22050, 16000), (8000, 16000), (48000, 16000)):
        clip = tone(0.5, rate, 440.0)
        out = resample(clip, rate, target)
        assert len(out) == int(np.ceil(len(clip) * target / rate))
        expected = tone(0.5, target, 440.0)[: len(out)]
        middle = slice(len(out) // 10, -len(out) // 10)  # the ends see the zero padding
        np.testing.assert_allclose(out[middle], expected[middle], atol=2e-3, err_msg=f"{rate} -> {target}")
    def gain(rate: int, hertz: float) -> float:
        out = resample(tone(0.5, rate, hertz), rate, 16000)[800:-800]
        return float(np.sqrt(np.mean(out ** 2)) / (0.5 / np.sqrt(2)))

    for rate in (44100, 22050, 44101):  # 44101: a ratio of 16,000 phases, computed per output
        assert gain(rate, 6000) == pytest.approx(1, abs=0.01) and gain(rate, 6400) == pytest.approx(1, abs=0.01)
        assert max(gain(rate, hertz) for hertz in range(8010, 11000, 60)) < 10 ** (-40 / 20)  # would alias back
    same = tone(0.1, 16000)
    assert np.array_equal(resample(same, 16000, 16000), same)
    short = resample(np.ones(3, np.float32), 44100, 16000)  # shorter than the kernel
    assert len(short) == 2 and np.isfinite(short).all()


# ---- features equal to the feature extractors' ----------------------------------------------------

def _encoder(extractor, folder: Path) -> AudioEncoder:
    from edgeft.exporting.hf_audio import _inputs, audio_settings

    settings, arrays = audio_settings(extractor, folder, None)
    if arrays:
        np.savez(folder / "audio_features.npz", **arrays)
    inputs = [spec.as_dict() for spec in _inputs(settings)]
    return AudioEncoder(folder, {"modality": "audio", "preprocessing": {"kind": "audio", **settings}, "inputs": inputs})


def test_features_equal_the_feature_extractors(tmp_path):
    """A 22.05 kHz recording (a chirp with noise, as a synthesiser or phone writes) read, resampled to
    16 kHz and turned into features, against the same samples through transformers' extractors:
    Wav2Vec2 (normalised over the clip, then padded, with and without a mask), Whisper's log-mel
    (numpy path exactly; its default torch path within 1e-4) and AST's filter bank, for clips
    shorter and longer than the model's length."""
    from transformers import ASTFeatureExtractor, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    rng = np.random.default_rng(1)
    for seconds in (0.7, 1.6, 12.0):  # 12 s: longer than every model hears (only its start is read)
        t = np.arange(int(seconds * 22050)) / 22050
        clip = (0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
        path = write_pcm16(tmp_path / f"clip-{seconds}.wav", clip, 22050)
        samples = resample(read_wav(path)[0], 22050, RATE)
        for mask in (True, False):
            extractor = Wav2Vec2FeatureExtractor(return_attention_mask=mask)
            folder = tmp_path / f"w2v-{mask}-{seconds}"
            folder.mkdir()
            ours = _encoder(extractor, folder).inputs([path])
            theirs = extractor(samples, sampling_rate=RATE, padding="max_length", max_length=RATE, truncation=True,
                               return_attention_mask=True, return_tensors="np")
            np.testing.assert_allclose(ours["input_values"], theirs["input_values"], atol=1e-6)
            assert ("attention_mask" in ours) == mask
            if mask:
                np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
        for chunk in (1, 30):
            extractor = WhisperFeatureExtractor(chunk_length=chunk)
            folder = tmp_path / f"whisper-{chunk}-{seconds}"
            folder.mkdir()
            ours = _encoder(extractor, folder).inputs([path])["input_features"]
            padded = np.zeros(extractor.n_samples, np.float32)
            padded[: min(len(samples), extractor.n_samples)] = samples[: extractor.n_samples]
            np.testing.assert_allclose(ours, extractor._np_extract_fbank_features(padded[None], "cpu"), atol=1e-6)
            default = extractor(samples, sampling_rate=RATE, return_tensors="np")["input_features"]
            np.testing.assert_allclose(ours, default, atol=1e-4)
        for frames in (100, 1024):
            extractor = ASTFeatureExtractor(max_length=frames)
            folder = tmp_path / f"ast-{frames}-{seconds}"
            folder.mkdir()
            ours = _encoder(extractor, folder).inputs([path])["input_values"]
            np.testing.assert_allclose(ours, extractor(samples, sampling_rate=RATE, return_tensors="np")["input_values"],
                                       atol=1e-5)


# ---- the models through edgeft --------------------------------------------------------------------

AUDIO_MODELS = ["Wav2Vec2", "HuBERT", "Whisper encoder", "AST"]


@pytest.fixture(scope="session")
def audio_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio-models")
    built = {name: architectures.BUILDERS[name](root / name.split()[0]) for name in AUDIO_MODELS}
    built["Wav2Vec2 (attention mask)"] = architectures.wav2vec2(root / "wav2vec2-mask", attention_mask=True)
    return built


def _clips(folder: Path, words: list[str], per_word: int, seed: int) -> Path:
    """Class subfolders of tones whose pitch is the class (a stand-in for words where espeak-ng
    is absent), at 22.05 kHz so reading resamples them."""
    rng = np.random.default_rng(seed)
    for index, word in enumerate(words):
        (folder / word).mkdir(parents=True, exist_ok=True)
        for n in range(per_word):
            clip = tone(rng.uniform(0.5, 1.2), 22050, 300.0 * (index + 1) * rng.uniform(0.95, 1.05), rng.uniform(0.2, 0.6))
            write_pcm16(folder / word / f"{n}.wav", clip + 0.01 * rng.standard_normal(len(clip)).astype(np.float32),
                        22050)
    return folder


@pytest.mark.parametrize("name", [*AUDIO_MODELS, "Wav2Vec2 (attention mask)"])
def test_audio_classifiers_export_train_deploy_and_predict(audio_models, name, tmp_path):
    import edgeft

    data = _clips(tmp_path / "clips", ["low", "mid", "high"], 6, seed=3)
    artifacts = edgeft.export(audio_models[name], labels=["high", "low", "mid"], output=tmp_path / "art")
    manifest = artifacts.manifest.data
    assert manifest["modality"] == "audio" and manifest["preprocessing"]["kind"] == "audio"
    assert [spec["name"] for spec in manifest["inputs"]] == (
        ["input_values", "attention_mask"] if "mask" in name else
        ["input_features"] if name.startswith("Whisper") else ["input_values"])
    # dropout lives only where parameters train: Wav2Vec2's encoder-wide dropout runs before its
    # layers, so it belongs to the frozen prefix, whose cached features must be deterministic
    import onnx

    assert not [n.name for n in onnx.load(str(artifacts.manifest.path("prefix_model"))).graph.node
                if n.op_type == "Dropout"]
    run = edgeft.train(artifacts, data, val=data, epochs=2, batch_size=6, run_dir=tmp_path / "run")
    assert np.isfinite(run.after.loss)
    bundle = edgeft.deploy(run, device="raspberry-pi-5", output=tmp_path / "bundle")
    clip = str(data / "low" / "0.wav")
    predictions = bundle.predict([clip])
    assert predictions[0].label in ("high", "low", "mid") and sum(predictions[0].scores.values()) == pytest.approx(1, abs=1e-4)
    out = run_edgeft(["predict", str(tmp_path / "bundle"), clip, "--json"], tmp_path)  # on the device side: no torch
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["label"] == predictions[0].label


def test_a_table_of_paths_and_a_folder_of_classes_read_the_same_clips(audio_models, tmp_path):
    from edgeft.data.records import read_records

    import edgeft

    data = _clips(tmp_path / "clips", ["low", "high"], 3, seed=4)
    artifacts = edgeft.export(audio_models["AST"], labels=["high", "low"], output=tmp_path / "art")
    manifest = artifacts.manifest.data
    (data / "notes.txt").write_text("not a clip")
    (data / "low" / "cover.png").write_bytes(b"")
    folder = read_records(data, manifest)
    assert len(folder.skipped) == 2 and all("not a WAV file" in s for s in folder.skipped), folder.skipped
    assert len(folder) == 6 and [str(p) for p in folder.files][:3] == [str(data / "high" / f"{n}.wav") for n in range(3)]
    table = tmp_path / "clips.csv"
    rows = [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in folder.files]
    table.write_text("path,label\n" + "\n".join(rows + ["clips/missing.wav,low", "clips/notes.txt,low",
                                                         "x" * 300 + ".wav,low"]) + "\n")
    read = read_records(table, manifest)
    assert [str(p) for p in read.files] == [str(p) for p in folder.files]
    assert np.array_equal(read.labels, folder.labels)
    assert any("missing.wav does not exist" in s for s in read.skipped)
    assert any("notes.txt is not a WAV file" in s for s in read.skipped)
    assert any("cannot be read (File name too long)" in s for s in read.skipped), read.skipped
    with pytest.raises(EdgeftError, match="does not exist"):
        read_records(table, manifest, strict=True)
    run = edgeft.train(artifacts, table, val=data, epochs=1, batch_size=3, run_dir=tmp_path / "run")
    assert sum(map(sum, run.after.confusion)) == 6


def test_what_audio_export_cannot_do_is_refused_by_name(audio_models, tiny_bert, tmp_path):
    import edgeft
    from transformers import SeamlessM4TFeatureExtractor

    with pytest.raises(EdgeftError, match="Whisper reads 30 s windows"):
        edgeft.export(audio_models["Whisper encoder"], clip_seconds=2, output=tmp_path / "a")
    with pytest.raises(EdgeftError, match="clip length of audio models"):
        edgeft.export(tiny_bert, clip_seconds=2, output=tmp_path / "b")
    with pytest.raises(EdgeftError, match="clip length of Hugging Face audio models"):
        edgeft.export(None, clip_seconds=2, output=tmp_path / "b")  # the built-in text model
    with pytest.raises(EdgeftError, match="fine-tunes text encoders"):
        edgeft.export(audio_models["Wav2Vec2"], task="embedding", output=tmp_path / "c")
    other = tmp_path / "seamless"
    shutil.copytree(audio_models["Wav2Vec2"], other)
    SeamlessM4TFeatureExtractor().save_pretrained(other)
    with pytest.raises(EdgeftError, match=r"SeamlessM4TFeatureExtractor\) is not one edgeft knows"):
        edgeft.export(other, output=tmp_path / "d")
    artifacts = edgeft.export(audio_models["Wav2Vec2"], clip_seconds=0.5, labels=["a", "b"], output=tmp_path / "e")
    assert artifacts.manifest.data["inputs"][0]["shape"] == ["batch", RATE // 2]
    text = tmp_path / "t.csv"
    text.write_text("text,label\nhello,a\n")
    with pytest.raises(EdgeftError, match="has no 'path' column, and this model reads WAV files"):
        edgeft.train(artifacts, text, run_dir=tmp_path / "r")
    for damaged in ({"features": "mp3"}, {"sampling_rate": 0}, {"samples": "many"}, {"attention_mask": True},
                    {"samples": 4000}):
        from edgeft.manifest import check_fields, load_manifest

        manifest = load_manifest(tmp_path / "e")
        manifest.data["preprocessing"].update(damaged)
        field = "inputs" if damaged in ({"attention_mask": True}, {"samples": 4000}) else "preprocessing." + next(iter(damaged))
        with pytest.raises(EdgeftError, match=f"field {field} "):
            check_fields(manifest)


# ---- keyword spotting on synthesised speech -------------------------------------------------------

def _speak(folder: Path, voices: list[str], speeds: list[int]) -> Path:
    for word in WORDS:
        (folder / word).mkdir(parents=True, exist_ok=True)
        for voice in voices:
            for speed in speeds:
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w",
                                str(folder / word / f"{voice}-{speed}.wav"), word], check=True, capture_output=True)
    return folder


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_keyword_spotting_learns_words_in_voices_it_never_heard(audio_models, tmp_path):
    """Four words spoken by espeak-ng (22.05 kHz, resampled on reading) in six voices at three
    speeds train a random-weight Wav2Vec2's last block and head; two other voices at two other
    speeds are held out. The device side (no torch) trains, deploys and predicts."""
    import edgeft

    train = _speak(tmp_path / "train", TRAIN_VOICES, [120, 160, 200])
    held_out = _speak(tmp_path / "held-out", HELD_OUT_VOICES, [140, 180])
    edgeft.export(audio_models["Wav2Vec2"], labels=sorted(WORDS), output=tmp_path / "art")
    before = edgeft.evaluate(tmp_path / "art", held_out)
    device = run_edgeft(["train", str(tmp_path / "art"), str(train), "--val", str(held_out), "--epochs", "20",
                         "--lr", "3e-3", "--batch-size", "8", "--run-dir", str(tmp_path / "run")], tmp_path)
    assert device.returncode == 0, device.stderr[-2000:]
    deployed = run_edgeft(["deploy", str(tmp_path / "run"), "--device", "raspberry-pi-5", "-o", str(tmp_path / "kws")],
                          tmp_path)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    (held_out / "yes" / "._en-us+f3-140.wav").write_bytes(b"\0\5\26\7")  # macOS metadata next to a clip
    out = run_edgeft(["predict", str(tmp_path / "kws"), str(held_out), "--json"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    predictions = json.loads(out.stdout)
    assert len(predictions) == len(WORDS) * len(HELD_OUT_VOICES) * 2
    accuracy = np.mean([Path(p["input"]).parent.name == p["label"] for p in predictions])
    assert before.accuracy <= 0.4 and accuracy >= 0.5, (before.accuracy, accuracy)
    assert edgeft.evaluate(tmp_path / "kws", held_out).accuracy == pytest.approx(accuracy)
    bad = run_edgeft(["predict", str(tmp_path / "kws"), str(tmp_path / "art" / "manifest.json")], tmp_path)
    assert not failed_cleanly(bad), failed_cleanly(bad)
