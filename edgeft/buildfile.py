"""``edgeft build``: declarative, reproducible artifact (and bundle) builds from ``edgeft.toml``.

Each ``[[build]]`` entry names a source model, labels, trainable set, loss, optimizer and,
optionally, device profiles to make untrained bundles for. A build is skipped when its key is
unchanged: the sha256 of the model files and label file, the entry itself and the tool and
runtime versions. Outputs carry no timestamps or absolute paths, so an unchanged build gives
byte-identical ONNX files and checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import Field, model_validator

from edgeft import __version__
from edgeft.errors import EdgeftError
from edgeft.fsutil import sha256_file
from edgeft.manifest import load_manifest, verify_files
from edgeft.ortcompat import runtime_versions
from edgeft.run.record import content_sha256
from edgeft.validation import Strings, Table, Text, check, in_file, rule

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


ARTIFACTS_DIR = "artifacts/build/artifacts"
BUNDLES_DIR = "artifacts/build/bundles"
PACKAGES_DIR = "artifacts/build/packages"


class BuildEntry(Table):
    """One ``[[build]]`` table; paths are relative to the build file's folder. The export,
    package and deploy steps check the values themselves; this model checks their types."""

    name: Annotated[Text, Field(examples=["intents"])]
    model: Annotated[str, Field(examples=["minilm"])] = "minilm"
    labels: Annotated[Optional[str], Field(examples=["labels.txt"])] = None
    num_labels: Optional[int] = None
    train: Annotated[str, Field(examples=["last:1"])] = "last:1"
    task: Optional[str] = None  # None: the loss's (classification by default); "embedding"
    loss: Optional[str] = None  # None: the task's default loss
    optimizer: Annotated[str, Field(examples=["adamw"])] = "adamw"
    max_length: Annotated[int, Field(examples=[128])] = 128
    seed: Annotated[int, Field(examples=[0])] = 0
    dropout: bool = True
    l2sp: Annotated[Optional[float], Field(examples=[0.01])] = None
    inputs: Annotated[Strings, Field(examples=[["input_ids", "attention_mask"]])] = ()
    modality: Optional[str] = None
    clip_seconds: Annotated[Optional[float], Field(examples=[1.0])] = None
    formats: Annotated[Strings, Field(examples=[["portable"]])] = ("portable",)
    # device packages (profile names or .toml paths)
    packages: Annotated[Strings, Field(examples=[["raspberry-pi-5"]])] = ()
    guard_data: Optional[str] = None  # labelled examples that check the packages' quantized prefixes
    devices: Annotated[Strings, Field(examples=[["raspberry-pi-5"]])] = ()
    val: Annotated[Optional[str], Field(examples=["val.csv"])] = None
    text_column: str = "text"
    label_column: str = "label"
    output: Optional[str] = None

    @model_validator(mode="after")
    def _bundles_have_data(self) -> BuildEntry:
        if self.devices and not self.val:
            raise rule("Bundles need validation data for the accuracy check.",
                       'add val = "path/to/val.csv" or remove devices.', at="val")
        return self


def read_build_file(path: Path) -> list[BuildEntry]:
    """Parse and validate; every error names the file, the build and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EdgeftError(f"The build file {path} does not exist.", where=str(path),
                          hint="write an edgeft.toml (see the README) or pass its path.") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgeftError(f"The build file cannot be read: {exc}.", where=str(path), hint="fix the TOML syntax.") from exc
    unknown_top = set(data) - {"build"}
    if unknown_top:
        raise EdgeftError(f"Unknown top-level key(s) {sorted(unknown_top)}.", where=str(path),
                          hint="the file holds [[build]] tables only.")
    builds = data.get("build")
    if not isinstance(builds, list) or not builds:
        raise EdgeftError("The build file has no [[build]] entries.", where=str(path),
                          hint="add at least one [[build]] table with a name.")
    entries: list[BuildEntry] = []
    for index, raw in enumerate(builds, start=1):
        if not isinstance(raw, dict):
            raise EdgeftError(f"build #{index} is not a table.", where=f"{path}: build #{index}",
                              hint="write each build as a [[build]] table.")
        label = f"{path}: build #{index}" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")
        entry = check(BuildEntry, raw, in_file(label), table="[[build]]")
        if any(entry.name == other.name for other in entries):
            raise EdgeftError(f"Two builds are named {entry.name!r}.", where=label, hint="give each build its own name.")
        entries.append(entry)
    return entries


def _hash_files(paths: list[Path], root: Path, digest: Any) -> None:
    for file in sorted(paths):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(sha256_file(file).encode())


def model_ref(model: str, base: Path) -> str:
    """The model argument for export, with paths made relative to the build file's folder."""
    from edgeft.exporting.builtin import BUILTIN_MODELS

    if model in BUILTIN_MODELS:
        return model
    if (base / model).exists():
        return str(base / model)
    target, _, factory = model.rpartition(":")
    return f"{base / target}:{factory}" if target.endswith(".py") else model


def model_files_digest(model: str, base: Path, digest: Any) -> None:
    """Feed the content of the model's files into ``digest`` (built-in, folder, .onnx or module)."""
    from edgeft.exporting.builtin import BUILTIN_MODELS, builtin_path

    if model in BUILTIN_MODELS:
        folder = builtin_path(model)
        _hash_files([p for p in folder.rglob("*") if p.is_file()], folder, digest)
        return
    path = base / model
    if path.is_dir():
        _hash_files([p for p in path.rglob("*") if p.is_file()], path, digest)
    elif path.is_file():
        digest.update(sha256_file(path).encode())
    else:
        target = model.rpartition(":")[0]
        candidate = base / target
        if target.endswith(".py") and candidate.is_file():
            digest.update(sha256_file(candidate).encode())
        else:
            import importlib.util

            spec = importlib.util.find_spec(target) if target else None
            if spec is None or not spec.origin:
                raise EdgeftError(f"The model {model!r} was not found.", where=model,
                                  hint="give a built-in name, a folder, an .onnx file or module:factory.")
            digest.update(sha256_file(Path(spec.origin)).encode())


def build_key(entry: BuildEntry, base: Path) -> str:
    """sha256 over the inputs of a build; equal keys give identical artifacts."""
    digest = hashlib.sha256()
    # an unset clip_seconds (newer than the build file format) leaves earlier builds' keys as they were
    fields = {k: v for k, v in entry.model_dump().items() if not (k == "clip_seconds" and v is None)}
    digest.update(json.dumps(fields, sort_keys=True).encode())
    model_files_digest(entry.model, base, digest)
    for extra in (entry.labels, entry.val, entry.guard_data):
        if extra:
            digest.update(content_sha256(base / extra).encode())  # a file, or a folder of class subfolders
    digest.update(json.dumps({"edgeft": __version__, **runtime_versions()}, sort_keys=True).encode())
    return digest.hexdigest()


def _up_to_date(folder: Path, key: str) -> bool:
    if not (folder / "manifest.json").is_file():
        return False
    try:
        manifest = load_manifest(folder, verify=False)
    except EdgeftError:
        return False
    return manifest.data.get("build_key") == key and not verify_files(manifest)


def run_builds(path: Path, force: bool = False, only: list[str] | None = None,
               progress: Any = None) -> dict[str, Any]:
    """Build every entry (or ``only`` these names) whose key changed; returns the build report."""
    from edgeft.exporting.artifacts import ExportOptions, export_artifacts
    from edgeft.labels import read_label_file

    path = Path(path)
    base = path.resolve().parent
    entries = read_build_file(path)
    if only:
        missing = sorted(set(only) - {e.name for e in entries})
        if missing:
            raise EdgeftError(f"No build named {missing[0]!r}.", where=str(path),
                              hint=f"builds: {', '.join(e.name for e in entries)}.")
        entries = [e for e in entries if e.name in only]
    started = time.perf_counter()
    results = []
    for entry in entries:
        begin = time.perf_counter()
        key = build_key(entry, base)
        output = base / (entry.output or f"{ARTIFACTS_DIR}/{entry.name}")
        result: dict[str, Any] = {"name": entry.name, "key": key, "output": str(output)}
        if not force and _up_to_date(output, key):
            result["status"] = "skipped"
        else:
            if progress:
                progress(f"{entry.name}: export")
            export_artifacts(ExportOptions(
                model=model_ref(entry.model, base),
                output=output, train=entry.train, task=entry.task, loss=entry.loss, optimizer=entry.optimizer,
                label_names=read_label_file(base / entry.labels) if entry.labels else [],
                num_labels=entry.num_labels, max_length=entry.max_length, inputs=list(entry.inputs),
                modality=entry.modality, clip_seconds=entry.clip_seconds, seed=entry.seed, dropout=entry.dropout, l2sp=entry.l2sp,
                formats=tuple(entry.formats), force=True,
                name=entry.name,
                extra={"build_key": key}))
            result["status"] = "built"
        result["files"] = {k: v["sha256"] for k, v in load_manifest(output, verify=False).data["files"].items()}
        result["packages"] = [_package(entry, device, output, key, base, progress, force) for device in entry.packages]
        result["bundles"] = []
        for device in entry.devices:
            result["bundles"].append(_bundle(entry, device, output, key, base, progress, force))
        result["seconds"] = round(time.perf_counter() - begin, 3)
        results.append(result)
    return {"build_file": str(path), "seconds": round(time.perf_counter() - started, 3),
            "built": sum(r["status"] == "built" for r in results),
            "skipped": sum(r["status"] == "skipped" for r in results), "builds": results}


def _bundle(entry: BuildEntry, device: str, artifacts: Path, key: str, base: Path, progress: Any,
            force: bool) -> dict[str, Any]:
    from edgeft.deployment.pipeline import DeployOptions, deploy

    return _for_device(entry, device, "bundle", base, BUNDLES_DIR, key, progress, force, lambda profile, folder: deploy(
        DeployOptions(source=artifacts, device=profile, output=folder, val=base / entry.val,
                      text_column=entry.text_column, label_column=entry.label_column, force=True,
                      extra={"build_key": key})))


def _package(entry: BuildEntry, device: str, artifacts: Path, key: str, base: Path, progress: Any,
             force: bool) -> dict[str, Any]:
    from edgeft.packaging.writer import make_package

    return _for_device(entry, device, "package", base, PACKAGES_DIR, key, progress, force, lambda profile, folder:
                       make_package(artifacts, profile, folder, base / entry.guard_data if entry.guard_data else None,
                                    force=True, text_column=entry.text_column, label_column=entry.label_column,
                                    extra={"build_key": key}))


def _for_device(entry: BuildEntry, device: str, what: str, base: Path, kind_dir: str, key: str, progress: Any,
                force: bool, make: Callable[[str, Path], Any]) -> dict[str, Any]:
    """One per-device output of a build (a bundle or a package) under ``base / kind_dir``, made by
    ``make(profile, folder)`` unless up to date; ``device`` is a profile name or a .toml path
    relative to the build file."""
    folder = base / kind_dir / f"{entry.name}-{Path(device).stem}"
    result: dict[str, Any] = {"device": device, "output": str(folder)}
    if not force and _up_to_date(folder, key):
        result["status"] = "skipped"
    else:
        if progress:
            progress(f"{entry.name}: {what} for {device}")
        make(str(base / device) if device.endswith(".toml") else device, folder)
        result["status"] = "built"
    result["files"] = {k: v["sha256"] for k, v in load_manifest(folder, verify=False).data["files"].items()}
    return result
