"""Device profiles: what a target device is and how models are quantized for it (device side).

A profile is a TOML file (``devices/NAME.toml`` for the built-in ones, or any path a user
gives) with four tables: ``[hardware]`` (architecture, ISA features, cores and the thread count
to run with, memory and storage budget), ``[quantization]`` (the recipe deploy applies first),
``[runtime]`` (graph optimization) and ``[targets]`` (allowed accuracy drop, latency and size
goals). Every field is checked; each problem is one :class:`EdgeftError` naming the file, the
dotted field, what was found and what is allowed.

Only the standard library is used (``tomllib``, or ``tomli`` on Python < 3.11), so listing and
validating profiles works on any device. The module is long (over 400 lines) because the
schema (the field table), its checker and the dataclasses it fills are kept together: a new
profile field is one entry here, and its error messages come with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import sys
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeft.errors import EdgeftError
from edgeft.ortcompat import GRAPH_OPTIMIZATIONS

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

FORMAT_VERSION = 1

ARCHES = ("x86_64", "arm64")
ISA_BY_ARCH = {
    "x86_64": ("sse4.2", "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avx-vnni"),
    "arm64": ("neon", "dotprod", "i8mm", "fp16", "sve"),
}
KNOWN_ISA = tuple(feature for features in ISA_BY_ARCH.values() for feature in features)
MODES = ("dynamic", "static", "weight-only", "fp16", "none")
FORMATS = ("qoperator", "qdq")
WEIGHT_TYPES = ("int8", "uint8", "int4")
ACTIVATION_TYPES = ("uint8", "int8")
# Operators ONNX Runtime's quantizer handles; only used to catch a wrong spelling ("Matmul").
KNOWN_OP_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "Gather", "GatherElements",
                  "EmbedLayerNormalization", "LSTM", "Transpose", "Add", "Mul", "Relu", "Clip", "LeakyRelu",
                  "Sigmoid", "Softmax", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Split", "Pad",
                  "Reshape", "Squeeze", "Unsqueeze", "Resize", "Where", "ArgMax", "LayerNormalization",
                  "InstanceNormalization", "Gelu", "MatMulNBits")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OP_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Hardware:
    """The device: architecture, ISA features, cores, threads to use, memory and storage budget."""

    arch: str
    isa: tuple[str, ...]
    cores: int
    threads: int
    memory_mb: int
    storage_mb: int


@dataclass(frozen=True)
class Quantization:
    """The recipe deploy tries first (the accuracy guard falls back from it to safer ones)."""

    mode: str
    format: str
    weight_type: str
    activation_type: str
    per_channel: bool
    reduce_range: bool
    quantize_embeddings: bool
    op_types: tuple[str, ...]
    exclude_nodes: tuple[str, ...]
    calibration_examples: int

    def summary(self) -> str:
        """One line for people, e.g. ``dynamic int8 QOperator, reduce-range``."""
        if self.mode == "none":
            return "none (fp32)"
        if self.mode == "fp16":
            text = "fp16"
        elif self.mode == "weight-only":
            text = f"weight-only {self.weight_type} (fp32 compute)"
        elif self.mode == "static":
            text = (f"static {self.weight_type}/{self.activation_type} {_format_name(self.format)}, "
                    f"{self.calibration_examples} calibration examples")
        else:
            text = f"dynamic {self.weight_type} {_format_name(self.format)}"
        extras = []
        if self.mode in ("dynamic", "static"):
            if self.per_channel:
                extras.append("per-channel")
            if self.reduce_range:
                extras.append("reduce-range")
        if self.mode != "fp16" and not self.quantize_embeddings:
            extras.append("fp32 embeddings")
        if self.exclude_nodes:
            extras.append(f"{len(self.exclude_nodes)} node pattern(s) fp32")
        return ", ".join([text, *extras])


@dataclass(frozen=True)
class Runtime:
    """How ONNX Runtime prepares the graph."""

    graph_optimization: str
    fuse_transformer: bool


@dataclass(frozen=True)
class Targets:
    """Goals: the accuracy drop deploy accepts, and optional latency and size targets."""

    max_accuracy_drop: float
    latency_ms_p50: float | None
    max_model_mb: float | None


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile."""

    name: str
    description: str
    path: Path
    hardware: Hardware
    quantization: Quantization
    runtime: Runtime
    targets: Targets

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, with the same structure as the TOML file (plus ``path``)."""
        def plain(part: Any) -> dict[str, Any]:
            return {key: list(value) if isinstance(value, tuple) else value
                    for key, value in dataclasses.asdict(part).items()}

        return {
            "format_version": FORMAT_VERSION, "name": self.name, "description": self.description,
            "path": str(self.path), "hardware": plain(self.hardware), "quantization": plain(self.quantization),
            "runtime": plain(self.runtime), "targets": plain(self.targets),
        }

    def with_quantization(self, **changes: Any) -> DeviceProfile:
        """A copy with parts of the recipe changed (checked like a profile file)."""
        for key in ("op_types", "exclude_nodes"):
            if key in changes and isinstance(changes[key], list):
                changes[key] = tuple(changes[key])
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(Quantization)})
        if unknown:
            raise TypeError(f"unknown quantization field(s): {', '.join(unknown)}")
        recipe = dataclasses.replace(self.quantization, **changes)
        _Checker(self.path).quantization(dataclasses.asdict(recipe))  # same rules as the file
        return dataclasses.replace(self, quantization=recipe)


def _format_name(fmt: str) -> str:
    return {"qoperator": "QOperator", "qdq": "QDQ"}.get(fmt, fmt)


# ---------------------------------------------------------------------------------------------
# where profiles live


def profiles_dir() -> Path:
    """The built-in profiles: ``$EDGEFT_DEVICES``, the repository's ``devices/`` folder (a source
    checkout or editable install), or ``share/edgeft/devices`` where the installer put a wheel's
    data files: under the environment's prefix, the user base of ``pip install --user``, or any
    other scheme, found from the installed distribution's own record of its files (the profiles
    stay in the repository's top-level ``devices/``, where people and CI edit them, rather than
    inside the package)."""
    override = os.environ.get("EDGEFT_DEVICES")
    if override:
        return Path(override).expanduser()
    source = Path(__file__).resolve().parents[1] / "devices"
    if source.is_dir():
        return source
    installed = _installed_profiles()
    return installed if installed is not None else Path(sys.prefix) / "share" / "edgeft" / "devices"


def _installed_profiles() -> Path | None:
    """Where the ``share/edgeft/devices/*.toml`` files of the edgeft distribution this module was
    installed from are (several may be installed, e.g. in a venv and in the user site)."""
    from importlib import metadata

    here = Path(__file__).resolve()
    for dist in metadata.distributions(name="edgeft"):
        files = dist.files or []
        if not any(file.name == here.name and Path(str(file.locate())).resolve() == here for file in files):
            continue
        for file in files:
            if file.suffix == ".toml" and tuple(file.parts[-4:-1]) == ("share", "edgeft", "devices"):
                folder = Path(str(file.locate())).resolve().parent
                if folder.is_dir():
                    return folder
    return None


def _builtin_files() -> list[Path]:
    folder = profiles_dir()
    if not folder.is_dir():
        raise EdgeftError(f"The device profile folder {folder} does not exist.", where=str(folder),
                          hint="set EDGEFT_DEVICES to a folder of NAME.toml profiles, "
                               "or pass the path of a profile file.")
    return sorted(folder.glob("*.toml"), key=lambda p: p.stem)


def profile_names() -> list[str]:
    """Names of the built-in profiles (file stems), sorted."""
    return [path.stem for path in _builtin_files()]


def list_profiles() -> list[DeviceProfile]:
    """Every built-in profile, sorted by name, each validated."""
    return [_load_file(path) for path in _builtin_files()]


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or "/" in text or os.sep in text or (os.altsep or "/") in text


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A built-in profile by name, or a user's profile file by path; validated."""
    if isinstance(name_or_path, Path) or _looks_like_path(str(name_or_path)):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise EdgeftError(f"The device profile file {path} does not exist.", where=str(path),
                              hint=f"pass a built-in name ({', '.join(_safe_names())}) or the path of a .toml profile.")
        if not path.is_file():
            raise EdgeftError(f"The device profile {path} is not a file.", where=str(path),
                              hint="pass the path of a .toml profile file.")
        return _load_file(path)
    name = str(name_or_path)
    names = profile_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        guess = f"did you mean {close[0]}? " if close else ""
        raise EdgeftError(f"Unknown device profile {name!r}.", where=str(profiles_dir()),
                          hint=f"{guess}available: {', '.join(names) or '(none)'}; "
                               "or pass the path of your own .toml profile.")
    return _load_file(profiles_dir() / f"{name}.toml")


def _safe_names() -> list[str]:
    try:
        return profile_names()
    except EdgeftError:
        return []


def _is_builtin(path: Path) -> bool:
    try:
        return path.resolve().parent == profiles_dir().resolve()
    except OSError:
        return False


def _load_file(path: Path) -> DeviceProfile:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise EdgeftError(f"The device profile file {path} does not exist.", where=str(path),
                          hint="check the path.") from exc
    except UnicodeDecodeError as exc:
        raise EdgeftError(f"The device profile is not UTF-8 text ({exc.reason} at byte {exc.start}).",
                          where=str(path), hint="save the file as UTF-8.") from exc
    except OSError as exc:
        raise EdgeftError(f"The device profile cannot be read: {exc.strerror or exc}.", where=str(path),
                          hint="check the file's permissions.") from exc
    try:
        data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, or an integer / nesting tomllib cannot take
        if not isinstance(exc, tomllib.TOMLDecodeError):
            raise EdgeftError(f"The device profile cannot be read: {str(exc).split(';')[0] or 'nesting too deep'}.",
                              where=str(path), hint="write plain numbers and flat lists.") from exc
        message = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", message)
        if found:
            message = message[: found.start()]
            where = f"{path}, line {found.group(1)}, column {found.group(2)}"
        else:
            message = re.sub(r"\s*\(at end of document\)\s*$", "", message)
            where = f"{path}, end of file"
        raise EdgeftError(f"The device profile is not valid TOML: {message}.", where=where,
                          hint="fix the TOML syntax (strings in double quotes, lists in [ ], one key = value per line).") from exc
    return profile_from_dict(data, path, check_name=_is_builtin(path))


def profile_from_dict(data: Mapping[str, Any], path: Path, check_name: bool = False) -> DeviceProfile:
    """Validate parsed profile data (a TOML document, or ``as_dict()`` output) into a profile.

    ``check_name`` requires ``name`` to equal the file stem (for built-in profiles).
    """
    data = dict(data)
    data.pop("path", None)  # as_dict() adds it; a TOML file has no such field
    return _Checker(Path(path)).profile(data, check_name)


# ---------------------------------------------------------------------------------------------
# validation


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return "date/time" if type(value).__module__ == "datetime" else type(value).__name__


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "a table"
    return repr(value) if not isinstance(value, (list, tuple)) else "[" + ", ".join(_show(v) for v in value) + "]"


@dataclass(frozen=True)
class _Field:
    kind: str  # "int", "float", "bool", "str", "strings"
    required: bool = True
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    example: str = ""


_TOP = {
    "format_version": _Field("int", minimum=1, example="format_version = 1"),
    "name": _Field("str", example='name = "my-board"'),
    "description": _Field("str", example='description = "My board: 4x Cortex-A55, 2 GB"'),
}
_SECTIONS: dict[str, dict[str, _Field]] = {
    "hardware": {
        "arch": _Field("str", choices=ARCHES),
        "isa": _Field("strings", choices=KNOWN_ISA, example='isa = ["neon", "dotprod"]'),
        "cores": _Field("int", minimum=1, maximum=1024, example="cores = 4"),
        "threads": _Field("int", minimum=1, maximum=1024, example="threads = 4"),
        "memory_mb": _Field("int", minimum=16, maximum=16 * 2**20, example="memory_mb = 2048"),
        "storage_mb": _Field("int", minimum=1, maximum=1024 * 2**20, example="storage_mb = 8192"),
    },
    "quantization": {
        "mode": _Field("str", choices=MODES),
        "format": _Field("str", choices=FORMATS),
        "weight_type": _Field("str", choices=WEIGHT_TYPES),
        "activation_type": _Field("str", choices=ACTIVATION_TYPES),
        "per_channel": _Field("bool"),
        "reduce_range": _Field("bool"),
        "quantize_embeddings": _Field("bool"),
        "op_types": _Field("strings", example='op_types = ["MatMul", "Gemm"]'),
        "exclude_nodes": _Field("strings", example='exclude_nodes = ["^/classifier/"]'),
        "calibration_examples": _Field("int", minimum=1, maximum=100_000, example="calibration_examples = 128"),
    },
    "runtime": {
        "graph_optimization": _Field("str", choices=GRAPH_OPTIMIZATIONS),
        "fuse_transformer": _Field("bool"),
    },
    "targets": {
        "max_accuracy_drop": _Field("float", minimum=0, maximum=100, example="max_accuracy_drop = 1.0"),
        "latency_ms_p50": _Field("float", required=False, minimum=0, example="latency_ms_p50 = 10.0"),
        "max_model_mb": _Field("float", required=False, minimum=0, example="max_model_mb = 100"),
    },
}
_KIND_TEXT = {"int": "an integer", "float": "a number", "bool": "a boolean (true or false)", "str": "a string",
              "strings": "an array of strings"}


class _Checker:
    """Checks one profile's data; every problem raises an EdgeftError naming file and field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, what: str, hint: str) -> EdgeftError:
        return EdgeftError(what, where=f"{self.path}, field {field}", hint=hint)

    def unknown(self, table: str, keys: Mapping[str, Any], allowed: list[str]) -> None:
        for key in keys:
            if key not in allowed:
                dotted = f"{table}.{key}" if table else key
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                kind = "table" if isinstance(keys[key], Mapping) else "field"
                hint = f"did you mean {close[0]}?" if close else f"allowed here: {', '.join(allowed)}."
                what = f"Unknown {kind} {dotted}" + (f"; did you mean {close[0]}?" if close else ".")
                raise self.fail(dotted, what, hint)

    def value(self, dotted: str, spec: _Field, value: Any) -> Any:
        if spec.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif spec.kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif spec.kind == "bool":
            ok = isinstance(value, bool)
        elif spec.kind == "str":
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, (list, tuple))
        if not ok:
            example = _example(dotted.rpartition(".")[2], spec)
            raise self.fail(dotted, f"{dotted} must be {_KIND_TEXT[spec.kind]}, "
                                    f"found {_toml_type(value)} {_show(value)}.", f"write e.g. {example}")
        if spec.kind == "strings":
            for index, item in enumerate(value):
                if not isinstance(item, str):
                    raise self.fail(f"{dotted}[{index}]", f"{dotted} must be an array of strings, item {index} "
                                                          f"is {_toml_type(item)} {_show(item)}.",
                                    f"write e.g. {spec.example}")
                if spec.choices and item not in spec.choices:
                    raise self.not_allowed(f"{dotted}[{index}]", item, spec.choices)
            duplicates = sorted({item for item in value if list(value).count(item) > 1})
            if duplicates:
                raise self.fail(dotted, f"{dotted} lists {_show(duplicates[0])} more than once.",
                                "list each entry once.")
            return tuple(value)
        if spec.kind == "float":
            try:
                number = float(value)
            except OverflowError:  # an integer too large for any float
                number = math.inf
            if not math.isfinite(number):
                raise self.fail(dotted, f"{dotted} must be a finite number, found {_num(value)}.", "write a plain number.")
            value = number
        if spec.choices and value not in spec.choices:
            raise self.not_allowed(dotted, value, spec.choices)
        if spec.kind in ("int", "float"):
            low, high = spec.minimum, spec.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = (f"between {_num(low)} and {_num(high)}" if low is not None and high is not None
                          else f"at least {_num(low)}" if low is not None else f"at most {_num(high)}")
                raise self.fail(dotted, f"{dotted} is {_num(value)}, out of range: it must be {bounds}.",
                                f"use a number {bounds}." if high is not None and low is not None
                                else f"use a number of {bounds}.")
        if spec.kind == "str" and not spec.choices and not value.strip():
            raise self.fail(dotted, f"{dotted} is empty.", "write a non-empty string.")
        return value

    def not_allowed(self, dotted: str, value: Any, choices: tuple[str, ...]) -> EdgeftError:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        guess = f"did you mean {_show(close[0])}? " if close else ""
        return self.fail(dotted, f"{dotted} is {_show(value)}, which is not allowed; "
                                 f"allowed: {', '.join(choices)}.", f"{guess}use one of: {', '.join(choices)}.")

    def table(self, name: str, raw: Any) -> dict[str, Any]:
        specs = _SECTIONS[name]
        if raw is None:
            raise self.fail(name, f"The table [{name}] is missing.",
                            f"add a [{name}] table with: {', '.join(k for k, s in specs.items() if s.required)}.")
        if not isinstance(raw, Mapping):
            raise self.fail(name, f"{name} must be a table ([{name}]), found {_toml_type(raw)} {_show(raw)}.",
                            f"write [{name}] on its own line followed by its fields.")
        self.unknown(name, raw, list(specs))
        out: dict[str, Any] = {}
        for key, spec in specs.items():
            dotted = f"{name}.{key}"
            if key not in raw or (raw[key] is None and not spec.required):
                if spec.required:
                    raise self.fail(dotted, f"The required field {dotted} is missing.",
                                    f"add {_example(key, spec)} to the [{name}] table"
                                    + (f" (one of: {', '.join(spec.choices)})." if spec.choices else "."))
                out[key] = None
                continue
            out[key] = self.value(dotted, spec, raw[key])
        return out

    def hardware(self, raw: Any) -> Hardware:
        hw = self.table("hardware", raw)
        foreign = [f for f in hw["isa"] if f not in ISA_BY_ARCH[hw["arch"]]]
        if foreign:
            raise self.fail("hardware.isa", f"hardware.isa lists {_show(foreign[0])}, which is not an "
                                            f"{hw['arch']} feature.",
                            f"for arch = \"{hw['arch']}\" use: {', '.join(ISA_BY_ARCH[hw['arch']])}.")
        if hw["threads"] > hw["cores"]:
            raise self.fail("hardware.threads", f"hardware.threads is {hw['threads']}, more than "
                                                f"hardware.cores ({hw['cores']}).",
                            f"use at most {hw['cores']} threads (or raise cores if the device has more).")
        return Hardware(**hw)

    def quantization(self, raw: Any) -> Quantization:
        q = self.table("quantization", raw)
        if q["weight_type"] == "int4" and q["mode"] != "weight-only":
            raise self.fail("quantization.weight_type", f"quantization.weight_type is \"int4\", which needs "
                                                        f"mode \"weight-only\" (mode is {_show(q['mode'])}).",
                            'set mode = "weight-only", or weight_type = "int8".')
        for index, op in enumerate(q["op_types"]):
            dotted = f"quantization.op_types[{index}]"
            if not OP_PATTERN.match(op):
                raise self.fail(dotted, f"{dotted} is {_show(op)}, not an ONNX operator name.",
                                'write operator types like "MatMul" or "Gemm".')
            if op not in KNOWN_OP_TYPES:
                close = [k for k in KNOWN_OP_TYPES if k.lower() == op.lower()]
                if close:
                    raise self.fail(dotted, f"{dotted} is {_show(op)}; did you mean {_show(close[0])}?",
                                    f"operator types are case-sensitive: write {_show(close[0])}.")
        for index, pattern in enumerate(q["exclude_nodes"]):
            try:
                re.compile(pattern)
            except re.error as exc:
                dotted = f"quantization.exclude_nodes[{index}]"
                raise self.fail(dotted, f"{dotted} is {_show(pattern)}, not a valid regular expression: {exc}.",
                                "fix the pattern (escape special characters with \\\\ in TOML strings).") from exc
        return Quantization(**q)

    def profile(self, data: dict[str, Any], check_name: bool) -> DeviceProfile:
        if "format_version" not in data:
            raise self.fail("format_version", "The required field format_version is missing.",
                            f"add format_version = {FORMAT_VERSION} at the top of the file.")
        version = self.value("format_version", _TOP["format_version"], data["format_version"])
        if version > FORMAT_VERSION:
            raise self.fail("format_version", f"format_version is {version}, newer than this edgeft reads "
                                              f"({FORMAT_VERSION}).",
                            "upgrade edgeft (pip install -U edgeft) to use this profile.")
        self.unknown("", data, [*_TOP, *_SECTIONS])  # after the version: newer formats may add fields
        top = {}
        for key in ("name", "description"):
            if key not in data:
                raise self.fail(key, f"The required field {key} is missing.", f"add {_TOP[key].example}")
            top[key] = self.value(key, _TOP[key], data[key])
        if not NAME_PATTERN.match(top["name"]):
            raise self.fail("name", f"name is {_show(top['name'])}: it must be 1 to 64 letters, digits, '.', "
                                    "'-' or '_', starting with a letter or digit.",
                            "use a name like \"my-board\" (it becomes part of bundle folder names).")
        if check_name and top["name"] != self.path.stem:
            raise self.fail("name", f"name is {_show(top['name'])} but the file is {self.path.name}: "
                                    "a built-in profile's name must equal its file name.",
                            f'set name = "{self.path.stem}", or rename the file to {top["name"]}.toml.')
        hardware = self.hardware(data.get("hardware"))
        quantization = self.quantization(data.get("quantization"))
        runtime = Runtime(**self.table("runtime", data.get("runtime")))
        targets = self.table("targets", data.get("targets"))
        for key in ("latency_ms_p50", "max_model_mb"):
            if targets[key] == 0:
                targets[key] = None  # 0 means "no target", like leaving it out
        return DeviceProfile(name=top["name"], description=top["description"], path=self.path, hardware=hardware,
                             quantization=quantization, runtime=runtime, targets=Targets(**targets))


def _example(key: str, spec: _Field) -> str:
    if spec.example:
        return spec.example
    if spec.kind == "str":
        return f'{key} = "{spec.choices[0]}"' if spec.choices else f'{key} = "..."'
    return f"{key} = " + {"int": "1", "float": "1.0", "bool": "true"}.get(spec.kind, "[]")


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    if isinstance(value, int):  # also integers far beyond float range
        text = str(value)
        return text if len(text) <= 24 else f"{text[:6]}...({len(text.lstrip('-'))} digits)"
    if not math.isfinite(value):
        return repr(value)
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
