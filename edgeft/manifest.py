"""The manifest: the contract between the host that exports and the device that trains.

``manifest.json`` sits next to the ONNX files and checkpoint and describes everything a reader
needs (task, inputs, labels, what trains, versions) plus the sha256 of every file. Every reader
loads it through :func:`load_manifest`, which refuses a newer format, a path that escapes the
folder, and any file whose bytes do not match.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import EdgeftError
from edgeft.fsutil import atomic_write_text, sha256_file
from edgeft.ortcompat import GRAPH_OPTIMIZATIONS

MANIFEST_NAME = "manifest.json"
RUN_FILE = "run.json"  # the record of a training run (edgeft.training.loop), which has no manifest
FORMAT_VERSION = 1
TAIL_PREFIX = "tail_"  # file keys of the tail artifacts used with the frozen-prefix cache
L2SP_INPUT = "l2sp_strength"  # the scalar input of training graphs built with the L2-SP term


@dataclass
class Manifest:
    """A parsed manifest. ``data`` is the JSON object; helpers read the common fields."""

    folder: Path
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def label_names(self) -> list[str]:
        return list(self.data.get("labels", {}).get("names", []))

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return list(self.data["inputs"])

    @property
    def l2sp(self) -> float | None:
        """The export's L2-SP strength (the default of training), or None when the graphs have no L2-SP term."""
        section = self.data.get("l2sp")
        return float(section["strength"]) if isinstance(section, dict) else None

    def path(self, key: str) -> Path:
        """Absolute path of the file registered under ``files[key]``."""
        entry = self.data.get("files", {}).get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise EdgeftError(f"The manifest lists no {key!r} file, which is needed here.",
                              where=str(self.folder / MANIFEST_NAME),
                              hint="re-create the folder with this edgeft version; do not edit the manifest by hand.")
        return self.folder / entry["path"]


def file_entry(folder: Path, relpath: str) -> dict[str, Any]:
    """The manifest record of one file: relative path, size and sha256."""
    path = folder / relpath
    return {"path": relpath, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def write_manifest(folder: Path, data: dict[str, Any], files: dict[str, str]) -> Manifest:
    """Hash ``files`` (key -> path relative to ``folder``) and write ``manifest.json`` atomically."""
    record = dict(data)
    record["format_version"] = FORMAT_VERSION
    record["files"] = {key: file_entry(folder, rel) for key, rel in sorted(files.items())}
    atomic_write_text(folder / MANIFEST_NAME, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Manifest(folder=folder, data=record)


def _safe_relpath(folder: Path, rel: Any, where: Path) -> Path:
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise EdgeftError(f"The manifest lists an invalid file path {rel!r}.", where=str(where),
                          hint="re-create the folder with edgeft; do not edit the manifest by hand.")
    resolved = (folder / rel).resolve()
    if folder.resolve() not in resolved.parents:
        raise EdgeftError(f"The manifest path {rel!r} points outside its folder.", where=str(where),
                          hint="this folder is not safe to use; re-create it with edgeft.")
    return resolved


TRAINABLE_KINDS = ("artifacts", "package")  # folders edgeft train, evaluate and deploy take


def load_manifest(folder: Path | str, verify: bool = True, kind: str | tuple[str, ...] | None = None) -> Manifest:
    """Read and check a folder's manifest; with ``verify`` every file's sha256 is checked."""
    folder = Path(folder)
    where = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise EdgeftError(f"{folder} is not a folder.", where=str(folder),
                          hint="give the path of an edgeft artifact folder or bundle.")
    if not where.is_file():
        if (folder / RUN_FILE).is_file():
            raise _run_folder(folder, kind)
        raise EdgeftError(f"{folder} has no {MANIFEST_NAME}, so it is not an edgeft artifact folder or bundle.",
                          where=str(folder), hint="give a folder written by `edgeft export` (artifacts) or "
                                                  "`edgeft deploy` (a bundle).")
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: also undecodable text, 5000-digit numbers
        raise EdgeftError(f"The manifest cannot be read: {str(exc).split(';')[0]}.", where=str(where),
                          hint="the folder is damaged; re-create it with edgeft.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise EdgeftError("The manifest is not an edgeft manifest (no 'files' table).", where=str(where),
                          hint="re-create the folder with edgeft.")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EdgeftError("The manifest has no valid format_version.", where=str(where),
                          hint="re-create the folder with edgeft.")
    if version > FORMAT_VERSION:
        raise EdgeftError(
            f"This folder uses manifest format {version}, newer than this edgeft reads ({FORMAT_VERSION}).",
            where=str(where), hint="upgrade edgeft on this machine (pip install -U edgeft).")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and data.get("kind") not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise EdgeftError(f"This folder holds {data.get('kind')!r}, but {wanted} is needed here.",
                          where=str(where), hint=f"give the path of an edgeft {' or '.join(kinds)} folder.")
    for key, entry in data["files"].items():
        if not isinstance(entry, dict):
            raise EdgeftError(f"The manifest entry for {key!r} is malformed.", where=str(where),
                              hint="re-create the folder with edgeft.")
        _safe_relpath(folder, entry.get("path"), where)
    manifest = Manifest(folder=folder, data=data)
    if verify:
        problems = verify_files(manifest)
        if problems:
            raise EdgeftError(
                "Files in this folder do not match its manifest: " + "; ".join(problems) + ".",
                where=str(folder), hint="the folder was changed or damaged in transfer; copy it again or re-create it.")
    return manifest


def _run_folder(folder: Path, kind: str | None) -> EdgeftError:
    """The error for a run folder (edgeft train's, which has a run.json, no manifest) given where
    an artifact folder or a bundle is needed: it says what a run folder is and what to give."""
    try:
        artifacts = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("artifacts")
    except (OSError, ValueError, AttributeError, RecursionError):
        artifacts = None
    if isinstance(artifacts, dict):  # a record that places the artifacts relative to the run folder
        artifacts = artifacts.get("absolute") or artifacts.get("path")
    trained_from = f"the artifact folder it was trained from ({artifacts})" if isinstance(artifacts, str) else \
        "the artifact folder it was trained from"
    needed = {"artifacts": "an artifact folder", "bundle": "a bundle"}.get(kind or "", "an artifact folder or bundle")
    hint = {"bundle": f"deploy the run first (`edgeft deploy {folder}`) and give the bundle it writes."}.get(
        kind or "", f"give {trained_from}; the run itself is used by `edgeft evaluate {folder} DATA` and "
                    f"`edgeft deploy {folder}`.")
    return EdgeftError(f"{folder} is a run folder (written by edgeft train), not {needed}.", where=str(folder),
                       hint=hint)


def verify_files(manifest: Manifest) -> list[str]:
    """Names of the files that are missing or whose size or sha256 differs (empty when all match)."""
    problems = []
    for key, entry in manifest.data["files"].items():
        path = manifest.folder / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} is missing")
        elif path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            problems.append(f"{entry['path']} was modified (sha256 mismatch)")
    return problems


# ---------------------------------------------------------------------------------------------
# the fields readers use


_RECREATE = "re-create the folder with edgeft; do not edit the manifest by hand."


class _Fields:
    """Type and value checks of manifest fields; each problem is one EdgeftError naming the field."""

    def __init__(self, manifest: Manifest) -> None:
        self.data = manifest.data
        self.where = manifest.folder / MANIFEST_NAME

    def fail(self, field: str, problem: str) -> EdgeftError:
        return EdgeftError(f"The manifest field {field} {problem}.", where=f"{self.where}, field {field}",
                           hint=_RECREATE)

    def get(self, field: str, kind: type | tuple[type, ...], parent: Any = None, key: Any = None) -> Any:
        """``parent[key]`` (by default the top-level ``field``): present and of ``kind`` (a boolean is
        not a number here, and a float must be finite)."""
        if parent is None:
            parent, key = self.data, field
        if isinstance(parent, dict) and key not in parent:
            raise self.fail(field, "is missing")
        value = parent[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds) \
                or (isinstance(value, float) and not math.isfinite(value)):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(field, f"must be {_KIND_NAMES.get(names, names)}, not {value!r}"[:200])
        return value

    def choice(self, field: str, choices: Any, parent: Any = None, key: Any = None) -> str:
        value = self.get(field, str, parent, key)
        if value not in choices:
            raise self.fail(field, f"is {value!r}, not one of {', '.join(choices)}"[:300])
        return value

    def count(self, field: str, parent: Any = None, key: Any = None, minimum: int = 1,
              maximum: int = 2**31) -> int:
        value = self.get(field, int, parent, key)
        if not minimum <= value <= maximum:
            raise self.fail(field, f"is {value}, outside {minimum}..{maximum}"[:200])
        return value

    def tensor(self, field: str, spec: Any) -> dict[str, Any]:
        """A tensor spec {name, dtype, shape}: numeric dtype, dims that are sizes or axis names."""
        if not isinstance(spec, dict):
            raise self.fail(field, f"must be an object with name, dtype and shape, not {spec!r}"[:200])
        self.get(f"{field}.name", str, spec, "name")
        dtype = self.get(f"{field}.dtype", str, spec, "dtype")
        try:
            numeric = np.dtype(dtype).kind in "biuf"
        except (TypeError, ValueError, SyntaxError, KeyError):  # numpy's errors for a string it cannot parse
            numeric = False
        if not numeric:
            raise self.fail(f"{field}.dtype", f"is {dtype!r}, not a numeric type such as float32 or int64"[:200])
        shape = self.get(f"{field}.shape", list, spec, "shape")
        if not shape:
            raise self.fail(f"{field}.shape", "is empty")
        for index, dim in enumerate(shape):
            if not (isinstance(dim, str) and dim or isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0):
                raise self.fail(f"{field}.shape[{index}]", f"is {dim!r}, not a size or an axis name"[:200])
        return spec

    def strings(self, field: str, parent: Any = None, key: Any = None, unique: bool = False) -> list[str]:
        values = self.get(field, list, parent, key)
        for index, value in enumerate(values):
            self.get(f"{field}[{index}]", str, values, index)
        if unique and len(set(values)) != len(values):
            raise self.fail(field, "lists a name more than once")
        return values


_KIND_NAMES = {"str": "a string", "int": "a whole number", "list": "a list", "dict": "an object",
               "int or float": "a finite number", "bool": "true or false"}


# ONNX Runtime session config entries a bundle may carry (``session_config``), with their allowed values.
SESSION_CONFIG_KEYS = {"session.disable_quant_qdq": ("0", "1")}


MODALITIES = ("text", "image", "audio", "tensor")
AUDIO_FEATURES = ("waveform", "whisper-log-mel", "kaldi-fbank")  # the recipes of edgeft.data.spectrogram
AUDIO_FEATURE_FILE = "audio_features.npz"  # the window and mel filters of the spectrogram recipes
# the files table's entries of preprocessing files, which every folder downstream of export carries
PREPROCESSING_FILES = ("tokenizer", "preprocessor_config", AUDIO_FEATURE_FILE.split(".")[0])
IMAGE_RESAMPLING = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # pillow's filters


def _check_image_steps(check: _Fields, settings: dict[str, Any], channels: int) -> None:
    """The optional resize / crop / resample / offset / extra-std steps of image preprocessing
    (absent in manifests written before them: a plain resize to the model's size)."""
    for key, shapes in (("resize", ({"height", "width"}, {"shortest_edge"})), ("crop", ({"height", "width"},))):
        if settings.get(key) is None:
            continue
        step = check.get(f"preprocessing.{key}", dict, settings, key)
        if set(step) not in shapes:
            raise check.fail(f"preprocessing.{key}", f"has {sorted(step)}; allowed: "
                                                     + " or ".join(str(sorted(k)) for k in shapes))
        for name in step:
            check.count(f"preprocessing.{key}.{name}", step, name, maximum=1 << 14)
    if (settings.get("resize") or {}).get("shortest_edge") and settings.get("crop") is None:
        raise check.fail("preprocessing.crop", "is missing: a shortest-edge resize keeps each image's aspect ratio, "
                                               "and the model takes one size")
    if "resample" in settings:
        check.choice("preprocessing.resample", IMAGE_RESAMPLING, settings, "resample")
    if "rescale_offset" in settings:
        check.get("preprocessing.rescale_offset", bool, settings, "rescale_offset")
    if settings.get("extra_std") is not None:
        values = check.get("preprocessing.extra_std", list, settings, "extra_std")
        for index in range(len(values)):
            check.get(f"preprocessing.extra_std[{index}]", (int, float), values, index)
        if len(values) != channels or 0 in values:
            raise check.fail("preprocessing.extra_std", f"must hold {channels} number(s), none zero")


def _check_audio(check: _Fields, settings: dict[str, Any], data: dict[str, Any]) -> None:
    """The feature extractor's settings (see edgeft.data.spectrogram): the sampling rate, the
    recipe, the lengths and sizes each recipe reads, and their agreement with the model's inputs."""
    rate = check.count("preprocessing.sampling_rate", settings, "sampling_rate", maximum=1 << 20)
    features = check.choice("preprocessing.features", AUDIO_FEATURES, settings, "features")
    check.get("preprocessing.padding_value", (int, float), settings, "padding_value")
    inputs = data["inputs"]
    shape = inputs[0]["shape"][1:]
    if features != "kaldi-fbank":
        samples = check.count("preprocessing.samples", settings, "samples", maximum=600 * rate)
        check.get("preprocessing.normalize", bool, settings, "normalize")
    if features == "waveform":
        mask = check.get("preprocessing.attention_mask", bool, settings, "attention_mask")
        expected = [[samples]] * (2 if mask else 1)
        if [spec["shape"][1:] for spec in inputs] != expected or mask and inputs[1]["name"] != "attention_mask":
            raise check.fail("inputs", f"do not match the preprocessing's {samples} samples"
                                       + (" and attention mask" if mask else ""))
        return
    sizes = {key: check.count(f"preprocessing.{key}", settings, key, maximum=1 << 20)
             for key in ("hop_length", "fft_length", "mels", "frames")}
    file = check.get("preprocessing.file", str, settings, "file")
    if file not in [entry.get("path") for entry in data["files"].values()]:
        raise check.fail("preprocessing.file", f"names {file!r}, which is not a file listed in the manifest"[:200])
    if features == "whisper-log-mel":
        if samples <= sizes["fft_length"] // 2:
            raise check.fail("preprocessing.samples", f"is {samples}, too few for a window of {sizes['fft_length']}")
        expected = [sizes["mels"], samples // sizes["hop_length"]]
    else:
        expected = [sizes["frames"], sizes["mels"]]
        if settings.get("mean") is not None:
            check.get("preprocessing.mean", (int, float), settings, "mean")
            if not check.get("preprocessing.std", (int, float), settings, "std"):
                raise check.fail("preprocessing.std", "is 0")
    if len(inputs) != 1 or shape != expected:
        raise check.fail("inputs", f"do not match the preprocessing's features {expected}")


def check_fields(manifest: Manifest) -> Manifest:
    """Check the fields training, evaluation, deployment and prediction read; returns ``manifest``.

    :func:`load_manifest` checks the file table and the hashes; this checks the rest (types,
    allowed values and their agreement, e.g. the loss with the task, the tokenizer with a hashed
    file) so that a damaged or hand-edited manifest is one clear error naming the field instead
    of a failure deep inside a run.
    """
    from edgeft.tasks import LOSSES, OPTIMIZERS, TASKS, label_input

    check = _Fields(manifest)
    data = manifest.data
    task = check.choice("task", TASKS)
    modality = check.choice("modality", MODALITIES)
    loss = check.choice("loss", tuple(LOSSES))
    if LOSSES[loss].task != task:
        raise check.fail("loss", f"is {loss!r}, which is a {LOSSES[loss].task} loss, but the task is {task!r}")
    inputs = check.get("inputs", list)
    if not inputs:
        raise check.fail("inputs", "is empty")
    for index in range(len(inputs)):
        check.tensor(f"inputs[{index}]", inputs[index])
    if len({spec["name"] for spec in inputs}) != len(inputs):
        raise check.fail("inputs", "names an input more than once")
    output = check.get("output", dict)
    check.get("output.name", str, output, "name")
    shape = check.get("output.shape", list, output, "shape")
    if not shape:
        raise check.fail("output.shape", "is empty")
    width = check.count("output.shape[-1]", shape, -1)
    labels = check.get("labels", dict)
    names = check.strings("labels.names", labels, "names", unique=True)
    if task == "embedding" and names:
        raise check.fail("labels.names", f"lists {len(names)} labels, but an embedding has none")
    if task in ("classification", "multi-label") and len(names) != width:
        raise check.fail("labels.names", f"lists {len(names)} labels, but the model has {width} outputs")
    settings = check.get("preprocessing", dict)
    expected = {"text": "tokenizer", "image": "image", "audio": "audio"}.get(modality)
    if expected:
        check.choice("preprocessing.kind", (expected,), settings, "kind")
    if modality == "text":
        file = check.get("preprocessing.file", str, settings, "file")
        if file not in [entry.get("path") for entry in data["files"].values()]:
            raise check.fail("preprocessing.file", f"names {file!r}, which is not a file listed in the manifest"[:200])
        check.count("preprocessing.max_length", settings, "max_length", maximum=1 << 20)
        check.count("preprocessing.pad_token_id", settings, "pad_token_id", minimum=0)
    elif modality == "image":
        for key in ("width", "height"):
            check.count(f"preprocessing.{key}", settings, key, maximum=1 << 14)
        channels = check.count("preprocessing.channels", settings, "channels")
        if channels not in (1, 3):
            raise check.fail("preprocessing.channels", f"is {channels}; images are read as 1 (grey) or 3 (RGB) channels")
        check.get("preprocessing.rescale_factor", (int, float), settings, "rescale_factor")
        for key in ("mean", "std"):
            values = check.get(f"preprocessing.{key}", list, settings, key)
            for index in range(len(values)):
                check.get(f"preprocessing.{key}[{index}]", (int, float), values, index)
            if len(values) != channels or key == "std" and 0 in values:
                raise check.fail(f"preprocessing.{key}", f"must hold {channels} number(s) (no zero std)")
        _check_image_steps(check, settings, channels)
    elif modality == "audio":
        _check_audio(check, settings, data)
    if "source" in data:
        source = check.get("source", dict)
        for key in ("num_attention_heads", "hidden_size"):
            if source.get(key) is not None:
                check.count(f"source.{key}", source, key, maximum=1 << 20)
    if manifest.kind in TRAINABLE_KINDS:
        check.get("name", str)
        check.choice("optimizer", tuple(OPTIMIZERS))
        spec = check.tensor("labels.input", labels.get("input"))
        wanted = label_input(loss, width)
        for key, value in wanted.items():
            if spec[key] != value:
                raise check.fail(f"labels.input.{key}", f"is {spec[key]!r}, but the {loss} loss needs {value!r}"[:200])
        trainable = check.get("trainable", dict)
        tensors = check.get("trainable.tensors", list, trainable, "tensors")
        for index in range(len(tensors)):
            check.get(f"trainable.tensors[{index}].name", str, check.get(f"trainable.tensors[{index}]", dict,
                                                                        tensors, index), "name")
        if data.get("l2sp") is not None:
            l2sp = check.get("l2sp", dict)
            if check.get("l2sp.strength", (int, float), l2sp, "strength") < 0:
                raise check.fail("l2sp.strength", "is negative")
            names = {tensor["name"] for tensor in tensors}
            for index, name in enumerate(check.strings("l2sp.tensors", l2sp, "tensors", unique=True)):
                if name not in names:
                    raise check.fail(f"l2sp.tensors[{index}]", f"is {name!r}, which is not a trainable tensor"[:200])
        if "portable" in data:
            portable = check.get("portable", dict)
            if "available" in portable:
                check.get("portable.available", bool, portable, "available")
        cache = data.get("cache")
        if cache is not None:
            cache = check.get("cache", dict)
            if check.get("cache.available", bool, cache, "available") if "available" in cache else False:
                boundary = check.get("cache.boundary", list, cache, "boundary")
                for index in range(len(boundary)):
                    check.tensor(f"cache.boundary[{index}]", boundary[index])
                check.strings("cache.raw_inputs", cache, "raw_inputs")
    if manifest.kind == "package":
        device = check.get("device", dict)
        check.get("device.name", str, device, "name")
        prefix = data.get("prefix")
        if prefix is not None:
            prefix = check.get("prefix", dict)
            check.choice("prefix.graph_optimization", GRAPH_OPTIMIZATIONS, prefix,
                         "graph_optimization")
            _session_config(check, "prefix.session_config", check.get("prefix.session_config", dict, prefix,
                                                                      "session_config"))
    elif manifest.kind == "bundle":
        if data.get("threads") is not None:
            check.count("threads")
        if "graph_optimization" in data:
            check.choice("graph_optimization", GRAPH_OPTIMIZATIONS)
        if "session_config" in data:
            _session_config(check, "session_config", check.get("session_config", dict))
    return manifest


def _session_config(check: _Fields, field: str, config: dict[str, Any]) -> None:
    for key in config:
        if key not in SESSION_CONFIG_KEYS:
            raise check.fail(field, f"has the entry {key!r}, which edgeft does not know"[:200])
        check.choice(f"{field}.{key}", SESSION_CONFIG_KEYS[key], config, key)
