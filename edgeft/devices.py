"""Device profiles: what a target device is and how models are quantized for it (device side).

A profile is a TOML file (``devices/NAME.toml`` for the built-in ones, or any path a user
gives) with four tables: ``[hardware]`` (architecture, ISA features, cores and the thread count
to run with, memory and storage budget), ``[quantization]`` (the recipe deploy applies first),
``[runtime]`` (graph optimization) and ``[targets]`` (allowed accuracy drop, latency and size
goals). The tables are pydantic models (:mod:`edgeft.validation`): every field is checked, and
each problem is one :class:`EdgeftError` naming the file, the dotted field, what was found and
what is allowed. A new profile field is one annotated line in its table here; its error
messages come from its type, its bounds and its example.

The files are read with ``tomllib`` (``tomli`` on Python < 3.11).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field, field_validator, model_validator

from edgeft.errors import EdgeftError
from edgeft.ortcompat import GRAPH_OPTIMIZATIONS
from edgeft.validation import Strings, Table, Text, check, in_file, number, rule, show, strings

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


Arch = Literal[ARCHES]  # type: ignore[valid-type]


class Hardware(Table):
    """The device: architecture, ISA features, cores, threads to use, memory and storage budget."""

    arch: Arch
    isa: Annotated[strings(KNOWN_ISA), Field(examples=[["neon", "dotprod"]])]
    cores: Annotated[int, Field(ge=1, le=1024, examples=[4])]
    threads: Annotated[int, Field(ge=1, le=1024, examples=[4])]
    memory_mb: Annotated[int, Field(ge=16, le=16 * 2**20, examples=[2048])]
    storage_mb: Annotated[int, Field(ge=1, le=1024 * 2**20, examples=[8192])]

    @model_validator(mode="after")
    def _fits_arch(self) -> Hardware:
        foreign = [f for f in self.isa if f not in ISA_BY_ARCH[self.arch]]
        if foreign:
            raise rule(f"{{field}} lists {show(foreign[0])}, which is not an {self.arch} feature.",
                       f"for arch = \"{self.arch}\" use: {', '.join(ISA_BY_ARCH[self.arch])}.", at="isa")
        if self.threads > self.cores:
            raise rule(f"{{field}} is {self.threads}, more than hardware.cores ({self.cores}).",
                       f"use at most {self.cores} threads (or raise cores if the device has more).", at="threads")
        return self


class Quantization(Table):
    """The recipe deploy tries first (the accuracy guard falls back from it to safer ones)."""

    mode: Literal[MODES]  # type: ignore[valid-type]
    format: Literal[FORMATS]  # type: ignore[valid-type]
    weight_type: Literal[WEIGHT_TYPES]  # type: ignore[valid-type]
    activation_type: Literal[ACTIVATION_TYPES]  # type: ignore[valid-type]
    per_channel: bool
    reduce_range: bool
    quantize_embeddings: bool
    op_types: Annotated[Strings, Field(examples=[["MatMul", "Gemm"]])]
    exclude_nodes: Annotated[Strings, Field(examples=[["^/classifier/"]])]
    calibration_examples: Annotated[int, Field(ge=1, le=100_000, examples=[128])]

    @model_validator(mode="after")
    def _consistent(self) -> Quantization:
        if self.weight_type == "int4" and self.mode != "weight-only":
            raise rule(f"{{field}} is \"int4\", which needs mode \"weight-only\" (mode is {show(self.mode)}).",
                       'set mode = "weight-only", or weight_type = "int8".', at="weight_type")
        for index, op in enumerate(self.op_types):
            at = f"op_types[{index}]"
            if not OP_PATTERN.match(op):
                raise rule(f"{{field}} is {show(op)}, not an ONNX operator name.",
                           'write operator types like "MatMul" or "Gemm".', at=at)
            close = [k for k in KNOWN_OP_TYPES if k.lower() == op.lower() and k != op]
            if close:
                raise rule(f"{{field}} is {show(op)}; did you mean {show(close[0])}?",
                           f"operator types are case-sensitive: write {show(close[0])}.", at=at)
        for index, pattern in enumerate(self.exclude_nodes):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise rule(f"{{field}} is {show(pattern)}, not a valid regular expression: {exc}.",
                           "fix the pattern (escape special characters with \\\\ in TOML strings).",
                           at=f"exclude_nodes[{index}]") from exc
        return self

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


class Runtime(Table):
    """How ONNX Runtime prepares the graph."""

    graph_optimization: Literal[GRAPH_OPTIMIZATIONS]  # type: ignore[valid-type]
    fuse_transformer: bool


Target = Annotated[Optional[float], Field(ge=0, allow_inf_nan=False)]


class Targets(Table):
    """Goals: the accuracy drop deploy accepts, and optional latency and size targets (0 or left
    out: none)."""

    max_accuracy_drop: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, examples=[1.0])]
    latency_ms_p50: Annotated[Target, Field(examples=[10.0])] = None
    max_model_mb: Annotated[Target, Field(examples=[100])] = None

    @field_validator("latency_ms_p50", "max_model_mb")
    @classmethod
    def _zero_is_none(cls, value: float | None) -> float | None:
        return None if value == 0 else value


def _profile_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise rule(f"{{field}} is {show(name)}: it must be 1 to 64 letters, digits, '.', '-' or '_', starting "
                   "with a letter or digit.", 'use a name like "my-board" (it becomes part of bundle folder names).')
    return name


class DeviceProfile(Table):
    """A validated device profile: the TOML file's tables, and the file it was read from."""

    format_version: Annotated[int, Field(ge=1, examples=[FORMAT_VERSION])]
    name: Annotated[str, AfterValidator(_profile_name), Field(examples=["my-board"])]
    description: Annotated[Text, Field(examples=["My board: 4x Cortex-A55, 2 GB"])]
    path: Annotated[Path, Field(exclude=True)]  # not in the file: where it was read from
    hardware: Hardware
    quantization: Quantization
    runtime: Runtime
    targets: Targets

    @model_validator(mode="before")
    @classmethod
    def _readable_version(cls, data: Any) -> Any:
        """A newer format is refused before anything else: it may add fields this edgeft does not know."""
        version = data.get("format_version") if isinstance(data, Mapping) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise rule(f"{{field}} is {number(version)}, newer than this edgeft reads ({FORMAT_VERSION}).",
                       "upgrade edgeft (pip install -U edgeft) to use this profile.", at="format_version")
        return data

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, with the same structure as the TOML file (plus ``path``)."""
        data = self.model_dump(mode="json")
        return {"format_version": FORMAT_VERSION, "name": self.name, "description": self.description,
                "path": str(self.path), **{k: data[k] for k in ("hardware", "quantization", "runtime", "targets")}}

    def with_quantization(self, **changes: Any) -> DeviceProfile:
        """A copy with parts of the recipe changed (checked like a profile file)."""
        unknown = sorted(set(changes) - set(Quantization.model_fields))
        if unknown:
            raise TypeError(f"unknown quantization field(s): {', '.join(unknown)}")
        recipe = check(Quantization, {**self.quantization.model_dump(), **changes},
                       in_file(self.path), ("quantization",))
        return self.model_copy(update={"quantization": recipe})


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
    data = {key: value for key, value in data.items() if key != "path"}  # as_dict() adds it; a file has none
    path = Path(path)
    profile = check(DeviceProfile, {**data, "path": path}, in_file(path))
    if check_name and profile.name != path.stem:
        raise EdgeftError(f"name is {show(profile.name)} but the file is {path.name}: a built-in profile's name "
                          "must equal its file name.", where=f"{path}, field name",
                          hint=f'set name = "{path.stem}", or rename the file to {profile.name}.toml.')
    return profile
