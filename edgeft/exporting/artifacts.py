"""``edgeft export``: a pretrained model -> a verified training-artifact folder.

Steps: load the source, choose the trainable parameters, export the forward graph, split off the
frozen prefix, write the portable training graphs (standard ONNX operators, any onnxruntime) and,
when asked (``--format ort-training``), ONNX Runtime's training artifacts, write the manifest, and
prove the folder works by running one real training step and checking that the cached path
(prefix, then tail) computes what the full graph computes, all inside a staging folder that is
renamed into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeft import __version__
from edgeft.errors import EdgeftError
from edgeft.exporting.builtin import BUILTIN_MODELS, DEFAULT_MODEL, builtin_path
from edgeft.exporting.ort_artifacts import ORT_FORMAT, require_training_api, write_ort_training
from edgeft.exporting.smoke import smoke_step
from edgeft.exporting.portable import export_portable
from edgeft.exporting.tail import PREFIX_FILE, build_tail
from edgeft.exporting.source import LoadedModel, sample_array
from edgeft.fsutil import staged_folder
from edgeft.manifest import TAIL_PREFIX, Manifest, write_manifest
from edgeft.ortcompat import runtime_versions, session_options
from edgeft.outputs import check_output, output_check
from edgeft.selection import select_trainable
from edgeft.tasks import DEFAULT_LOSS, LOSSES, OPTIMIZERS, TASKS, label_input

FORMATS = ("portable", ORT_FORMAT)


@dataclass
class ExportOptions:
    """Everything ``edgeft export`` can be told; the defaults are the built-in MiniLM, last block."""

    model: str | None = None
    output: Path | None = None
    train: str = "last:1"
    loss: str | None = None  # None: the task's default loss (see edgeft.tasks.DEFAULT_LOSS)
    task: str | None = None  # None: the loss's task (classification by default); embedding: the encoder's own embedding
    optimizer: str = "adamw"
    label_names: list[str] = field(default_factory=list)
    num_labels: int | None = None
    max_length: int = 128
    clip_seconds: float | None = None  # clip length of audio models that read the waveform [default: 1 s]
    inputs: list[str] = field(default_factory=list)
    modality: str | None = None
    seed: int = 0
    dropout: bool = True
    l2sp: float | None = None  # build the L2-SP term with this default strength (None: no term)
    formats: tuple[str, ...] = ("portable",)  # training formats to write: portable, ort-training
    device: str | None = None  # write a device package for this profile instead of the artifact folder
    guard_data: Path | None = None  # labelled examples that check the package's quantized prefix
    max_drop: float | None = None  # the prefix guard's tolerance in points [default: the profile's]
    text_column: str = "text"
    label_column: str = "label"
    force: bool = False
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more manifest fields, e.g. a build key


@dataclass
class Tensor:
    """A parameter tensor of the exported model and whether it trains."""

    name: str
    shape: list[int]
    trainable: bool

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class ExportResult:
    """What an export produced, for the CLI's table and for API callers."""

    folder: Path
    manifest: Manifest
    tensors: list[Tensor]  # forward order
    repairs: list[str]
    notes: list[str]
    smoke_loss: float
    seconds: float

    @property
    def trainable(self) -> list[Tensor]:
        return [t for t in self.tensors if t.trainable]

    @property
    def frozen(self) -> list[Tensor]:
        return [t for t in self.tensors if not t.trainable]

    def summary(self) -> dict[str, Any]:
        """The JSON summary printed by ``edgeft export --json``."""
        package = {}
        if self.manifest.kind == "package":
            data = self.manifest.data
            package = {"device": data["device"]["name"], "size": data["size"],
                       "prefix": {k: data["prefix"][k] for k in ("chosen", "recipe_summary", "guard")}
                       if data.get("prefix") else None}
        return {"folder": str(self.folder), "kind": self.manifest.kind, **package,
                "trainable_tensors": len(self.trainable),
                "trainable_parameters": sum(t.numel for t in self.trainable),
                "frozen_tensors": len(self.frozen), "frozen_parameters": sum(t.numel for t in self.frozen),
                "repairs": self.repairs, "notes": self.notes, "smoke_loss": self.smoke_loss,
                "seconds": round(self.seconds, 2)}


def load_source(options: ExportOptions) -> tuple[LoadedModel, str]:
    """Resolve the model argument to a loaded model and a default name."""
    ref = options.model or DEFAULT_MODEL
    if options.clip_seconds is not None and not Path(ref).is_dir():
        raise EdgeftError("--clip-seconds sets the clip length of Hugging Face audio models (a model folder).",
                          where="--clip-seconds", hint="leave out --clip-seconds.")
    embedding = _resolve_task(options).task == "embedding"
    if embedding and (options.label_names or options.num_labels is not None):
        raise EdgeftError("An embedding has no labels: its training data says which texts belong together.",
                          where="--labels / --num-labels", hint="leave out --labels and --num-labels with --task embedding.")
    if ref in BUILTIN_MODELS:
        from edgeft.exporting.hf_source import load_text

        loaded = load_text(builtin_path(ref), options.label_names, options.num_labels, options.max_length,
                           options.seed, embedding)
        loaded.source.update({"builtin": ref})
        return loaded, ref
    path = Path(ref)
    if embedding and not path.is_dir():
        raise EdgeftError("The embedding task fine-tunes a Hugging Face text encoder (mean pooling, normalised).",
                          where=ref, hint="give the built-in model or a transformers text model folder.")
    if path.suffix == ".onnx" or path.is_file() and not ref.endswith(".py"):
        if not path.is_file():
            raise EdgeftError(f"The model file {ref} does not exist.", where=ref, hint="check the path.")
        from edgeft.exporting.onnx_source import load_onnx

        loaded = load_onnx(path, options.label_names, options.num_labels)
        loaded.source["file"] = path.name
        return loaded, path.stem
    if path.is_dir():
        from edgeft.exporting.hf_source import detect_modality, load_image, load_text

        modality = options.modality or detect_modality(path)
        if embedding and modality != "text":
            raise EdgeftError(f"The embedding task fine-tunes text encoders, and {path} holds a model of {modality} inputs.",
                              where=ref, hint="give a transformers text model folder, or leave out --task embedding.")
        if options.clip_seconds is not None and modality != "audio":
            raise EdgeftError(f"--clip-seconds sets the clip length of audio models, and {path} holds a {modality} model.",
                              where="--clip-seconds", hint="leave out --clip-seconds.")
        if modality == "audio":
            from edgeft.exporting.hf_audio import load_audio

            loaded = load_audio(path, options.label_names, options.num_labels, options.seed, options.clip_seconds)
        elif modality == "image":
            loaded = load_image(path, options.label_names, options.num_labels, options.seed)
        else:
            loaded = load_text(path, options.label_names, options.num_labels, options.max_length, options.seed,
                               embedding)
        loaded.source["folder"] = path.resolve().name
        return loaded, path.resolve().name
    if ":" in ref and not path.exists():
        from edgeft.exporting.torch_source import load_torch

        loaded = load_torch(ref, options.inputs, options.label_names, options.num_labels, options.seed)
        return loaded, re.sub(r"\W+", "-", ref.rpartition(":")[2]).strip("-") or "model"
    raise EdgeftError(f"The model {ref!r} was not found.", where=ref,
                      hint=f"give a built-in name ({', '.join(BUILTIN_MODELS)}), a transformers folder, "
                           "an .onnx file, or package.module:factory.")


def _forward_graph(loaded: LoadedModel, spec: str, dropout: bool) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The forward ONNX graph, the parameter names in forward order, and the trainable ones."""
    if loaded.module is not None:
        from edgeft.exporting.torch_export import export_onnx, set_export_modes, trace_forward

        trace = trace_forward(loaded.module, loaded.sample)
        order = trace.order
        trainable = select_trainable(order, spec, trace.shared)
        set_export_modes(loaded.module, set(trainable), dropout, trace)
        axes = {i.name: {k: d for k, d in enumerate(i.shape) if isinstance(d, str)} for i in loaded.inputs}
        axes[loaded.output] = {0: "batch"}
        model = export_onnx(loaded.module, loaded.sample, [loaded.output], axes)
        return model, order, trainable
    from edgeft.exporting.onnx_source import parameter_order

    order = parameter_order(loaded.onnx_model)
    return loaded.onnx_model, order, select_trainable(order, spec)


def _l2sp_tensors(options: ExportOptions, loaded: LoadedModel, trainable: list[str]) -> list[str] | None:
    """The trainable tensors the L2-SP term pulls toward their pretrained values (None: no term)."""
    if options.l2sp is None:
        return None
    if not (options.l2sp >= 0 and np.isfinite(options.l2sp)):
        raise EdgeftError(f"--l2sp {options.l2sp} is not a strength.", where="--l2sp",
                          hint="give a number >= 0 (e.g. 0.01); 0 builds the term switched off.")
    new = set(loaded.new_parameters)
    pulled = [n for n in trainable if n not in new]
    if not pulled:
        raise EdgeftError(f"--l2sp has nothing to pull: every tensor --train {options.train} selects is newly "
                          "initialised (a new head has no pretrained values).", where="--l2sp",
                          hint="train pretrained layers too (e.g. --train last:1), or use --weight-decay alone.")
    left = len(trainable) - len(pulled)
    loaded.notes.append(f"L2-SP: {len(pulled)} pretrained tensor(s) pulled toward their start (strength "
                        f"{options.l2sp:g}){f'; {left} new one(s) left to weight decay' if left else ''}")
    return pulled


def _tensors(model: onnx.ModelProto, order: list[str], trainable: set[str]) -> list[Tensor]:
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    return [Tensor(n, dims[n], n in trainable) for n in order]


def _sample_feeds(loaded: LoadedModel, prefix: Path | None, seed: int) -> Callable[[dict[str, int]], dict[str, np.ndarray]]:
    """Sample inputs of the graph the portable step trains (the prefix's outputs when it reads them)
    for given axis sizes ("*": every dynamic axis but the batch)."""
    session = None
    if prefix is not None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(prefix), session_options(None), providers=["CPUExecutionProvider"])

    def feeds(sizes: dict[str, int]) -> dict[str, np.ndarray]:
        dims = {d: sizes.get(d, sizes.get("*", 2)) for spec in loaded.inputs for d in spec.shape if isinstance(d, str)}
        dims["batch"] = sizes.get("batch", 2)
        batch = {spec.name: sample_array(spec, seed, dims) for spec in loaded.inputs}
        if session is not None:
            made = session.run(None, {i.name: batch[i.name] for i in session.get_inputs()})
            batch.update(zip((o.name for o in session.get_outputs()), made))
        return batch

    return feeds


def _versions() -> dict[str, str]:
    versions = {"edgeft": __version__, **runtime_versions()}
    for package in ("torch", "transformers"):
        with contextlib.suppress(ImportError):
            versions[package] = __import__(package).__version__
    return versions


def _resolve_task(options: ExportOptions) -> ExportOptions:
    """``task`` and ``loss`` made one: a task without a loss takes its default loss (embedding: the
    contrastive loss), a loss without a task implies its task, and a loss of another task is refused."""
    import dataclasses

    if options.task is not None and options.task not in TASKS:
        raise EdgeftError(f"Unknown task {options.task!r}.", where="--task", hint=f"use one of {', '.join(TASKS)}.")
    loss = options.loss or DEFAULT_LOSS[options.task or "classification"]
    if options.task is not None and loss in LOSSES and LOSSES[loss].task != options.task:
        raise EdgeftError(f"--loss {loss} is a {LOSSES[loss].task} loss, but --task is {options.task}.",
                          where="--task / --loss", hint=f"leave out --loss (the {options.task} task's is "
                                                        f"{DEFAULT_LOSS[options.task]}), or --task.")
    return dataclasses.replace(options, loss=loss, task=LOSSES[loss].task if loss in LOSSES else options.task)


def export_artifacts(options: ExportOptions, progress: Callable[[str], None] | None = None) -> ExportResult:
    """Run the whole export; see the module docstring. Raises EdgeftError on user mistakes.

    ``progress`` is called with a short description as each step starts (for a spinner).
    """
    start = time.perf_counter()
    step = progress or (lambda _text: None)
    options = _resolve_task(options)
    if options.loss not in LOSSES:
        raise EdgeftError(f"Unknown loss {options.loss!r}.", where="--loss", hint=f"use one of {', '.join(LOSSES)}.")
    if options.optimizer not in OPTIMIZERS:
        raise EdgeftError(f"Unknown optimizer {options.optimizer!r}.", where="--optimizer",
                          hint=f"use one of {', '.join(OPTIMIZERS)}.")
    formats = tuple(dict.fromkeys(options.formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise EdgeftError(f"Unknown training format {', '.join(unknown) or '(none)'}.", where="--format",
                          hint=f"use {' and/or '.join(FORMATS)}.")
    if ORT_FORMAT in formats:
        require_training_api("--format ort-training")  # before the slow part
    step("loading the model")
    loaded, default_name = load_source(options)
    name = options.name or default_name
    profile = None
    if options.device is not None:  # a device package: check the profile before the slow part
        from edgeft.machine import auto_device
        from edgeft.devices import load_profile

        if ORT_FORMAT in formats:
            raise EdgeftError("A device package holds the portable training graphs only.", where="--format ort-training",
                              hint="leave out --device to write ONNX Runtime's training artifacts.")
        profile = load_profile(auto_device() if options.device == "auto" else options.device)
        name_on_disk = f"{name}-{profile.name}"
    else:
        name_on_disk = name
    dest = Path(options.output) if options.output else Path("artifacts") / name_on_disk
    check_output(dest, options.force, "package" if profile is not None else "artifacts")  # before the slow part
    if options.task == "embedding" and options.train == "head":
        raise EdgeftError("An embedding has no head: what trains is the encoder's last blocks.", where="--train head",
                          hint="use --train last:1 (or last:N) with --task embedding.")
    step("exporting the forward graph to ONNX")
    forward, order, trainable = _forward_graph(loaded, options.train, options.dropout)
    float_inits = {i.name for i in forward.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    unused = [n for n in order if n not in float_inits]
    if unused:  # computed in forward() but not reaching the output, e.g. an unused pooler
        loaded.notes.append(f"left out {len(unused)} parameter(s) that do not reach the output "
                            f"({', '.join(unused[:2])}{', ...' if len(unused) > 2 else ''})")
        order = [n for n in order if n in float_inits]
        trainable = [n for n in trainable if n in float_inits]
        if not trainable:
            raise EdgeftError(f"--train {options.train} selects only parameters that do not affect the output.",
                              where="--train", hint="choose parameters the output depends on (e.g. --train head).")
    frozen = [n for n in order if n not in set(trainable) and n in float_inits]
    l2sp = _l2sp_tensors(options, loaded, trainable)
    if profile is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edgeft-export-") as tmp:
            artifacts = _write_artifacts(Path(tmp) / name, options, loaded, name, forward, order, trainable, frozen,
                                         formats, l2sp, step)
            from edgeft.packaging.writer import make_package

            package = make_package(artifacts.folder, str(profile.path), dest, options.guard_data, options.max_drop,
                                   options.force, options.text_column, options.label_column, options.extra, step)
        return ExportResult(folder=dest, manifest=package.manifest, tensors=artifacts.tensors, repairs=[],
                            notes=loaded.notes + package.notes, smoke_loss=artifacts.smoke_loss,
                            seconds=time.perf_counter() - start)
    result = _write_artifacts(dest, options, loaded, name, forward, order, trainable, frozen, formats, l2sp, step)
    result.seconds = time.perf_counter() - start
    return result


def _write_artifacts(dest: Path, options: ExportOptions, loaded: LoadedModel, name: str, forward: onnx.ModelProto,
                     order: list[str], trainable: list[str], frozen: list[str], formats: tuple[str, ...],
                     l2sp: list[str] | None, step: Callable[[str], None]) -> ExportResult:
    """The artifact folder at ``dest`` (staged, checked by a training step, then renamed into place)."""
    with staged_folder(dest, force=options.force, check=output_check("artifacts")) as stage:
        onnx.save(forward, str(stage / "forward.onnx"))
        step("splitting off the frozen prefix for the activation cache")
        cache, files, cache_notes, tail = build_tail(forward, trainable, frozen, loaded.inputs, stage, options.seed)
        loaded.notes.extend(cache_notes)
        portable: dict[str, Any] = {"available": False, "reason": "not asked for (--format)"}
        if "portable" in formats:
            step("writing the portable training graphs (standard ONNX operators)")
            portable_files, portable = export_portable(
                tail if tail is not None else forward, trainable, options.loss, options.optimizer, loaded.output,
                loaded.num_outputs, stage, TAIL_PREFIX if tail is not None else "",
                _sample_feeds(loaded, stage / PREFIX_FILE if tail is not None else None, options.seed), l2sp)
            files.update(portable_files)
        repairs: list[str] = []
        if ORT_FORMAT in formats:
            step("building ONNX Runtime's training, eval and optimizer models")
            ort_files, repairs = write_ort_training(forward, tail, trainable, frozen, options.loss, options.optimizer,
                                                    loaded.output, stage, l2sp)
            files.update(ort_files)
        (stage / "labels.txt").write_text("".join(f"{n}\n" for n in loaded.label_names), encoding="utf-8")
        files.update({"forward_model": "forward.onnx", "labels": "labels.txt"})
        for fname, content in loaded.preprocessing.files.items():
            (stage / fname).write_bytes(content)
            files[fname.split(".")[0]] = fname
        info = LOSSES[options.loss]
        tensors = _tensors(forward, order, set(trainable))
        trainable_t = [t for t in tensors if t.trainable]
        frozen_t = [t for t in tensors if not t.trainable]
        data = {
            "kind": "artifacts", "name": name, "source": loaded.source,
            "modality": {"text-classification": "text", "text-embedding": "text",
                         "image-classification": "image", "audio-classification": "audio"}.get(loaded.task_hint or "", "tensor"),
            "task": info.task, "loss": options.loss, "optimizer": options.optimizer,
            "inputs": [i.as_dict() for i in loaded.inputs],
            "output": {"name": loaded.output, "dtype": "float32", "shape": ["batch", loaded.num_outputs]},
            "labels": {"names": loaded.label_names, "input": label_input(options.loss, loaded.num_outputs)},
            "preprocessing": {"kind": loaded.preprocessing.kind, **loaded.preprocessing.settings},
            "trainable": {"spec": options.train, "dropout": options.dropout,
                          "tensors": [{"name": t.name, "shape": t.shape} for t in trainable_t],
                          "new": [t.name for t in trainable_t if t.name in set(loaded.new_parameters)],
                          "parameters": sum(t.numel for t in trainable_t),
                          "frozen_tensors": len(frozen_t), "frozen_parameters": sum(t.numel for t in frozen_t)},
            **({"l2sp": {"strength": options.l2sp, "tensors": l2sp}} if l2sp is not None else {}),
            "formats": list(formats), "cache": cache, "portable": portable, "repairs": repairs, "seed": options.seed,
            "tool": _versions(), **options.extra,
        }
        manifest = write_manifest(stage, data, files)
        step("running one training step to check the artifacts")
        smoke_loss = smoke_step(manifest, loaded, options.seed)
    final = Manifest(folder=dest, data=manifest.data)
    return ExportResult(folder=dest, manifest=final, tensors=tensors, repairs=repairs,
                        notes=loaded.notes, smoke_loss=smoke_loss, seconds=0.0)
