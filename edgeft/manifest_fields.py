"""The manifest fields that training, evaluation, deployment and prediction read, as pydantic
models: the same models check a manifest when it is written (:func:`edgeft.manifest.write_manifest`)
and when it is read (:func:`check_fields`), so writer and reader cannot drift.

:func:`edgeft.manifest.load_manifest` checks the file table and the hashes; these check the
rest (types, allowed values, and their agreement: the loss with the task, the labels with the
outputs, a tokenizer or feature table with a hashed file, audio settings with the inputs), so
that a damaged or hand-edited manifest is one clear error naming the field instead of a failure
deep inside a run. Sections are open (``extra="allow"``): a manifest carries more than is
checked here, and readers of other fields check them where they read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from edgeft.errors import EdgeftError
from edgeft.ortcompat import GRAPH_OPTIMIZATIONS
from edgeft.tasks import LOSSES, OPTIMIZERS, TASKS, label_input
from edgeft.validation import check, in_file, json_style, rule

RECREATE = "re-create the folder with edgeft; do not edit the manifest by hand."
MANIFEST = json_style("manifest", RECREATE)
MODALITIES = ("text", "image", "audio", "tensor")
AUDIO_FEATURES = ("waveform", "whisper-log-mel", "kaldi-fbank")  # the recipes of edgeft.data.spectrogram
IMAGE_RESAMPLING = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # pillow's filters
# ONNX Runtime session config entries a bundle may carry (``session_config``), with their allowed values.
SESSION_CONFIG_KEYS = {"session.disable_quant_qdq": ("0", "1")}

Count = Annotated[int, Field(ge=1, le=2**31)]
Size = Annotated[int, Field(ge=1, le=1 << 20)]
Pixels = Annotated[int, Field(ge=1, le=1 << 14)]
Number = Annotated[float, Field(allow_inf_nan=False)]


class Section(BaseModel):
    """A manifest object: JSON's types told apart (true is not 1), other fields kept."""

    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise rule("{field} lists a name more than once.", RECREATE)
    return values


Names = Annotated[list[str], AfterValidator(_unique)]


def _dtype(name: str) -> str:
    try:
        numeric = np.dtype(name).kind in "biuf"
    except (TypeError, ValueError, SyntaxError, KeyError):  # numpy's errors for a string it cannot parse
        numeric = False
    if not numeric:
        raise rule(f"{{field}} is {name!r}, not a numeric type such as float32 or int64."[:200], RECREATE)
    return name


def _dim(value: Any) -> Any:
    if not (isinstance(value, str) and value or isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        raise rule(f"{{field}} is {value!r}, not a size or an axis name."[:200], RECREATE)
    return value


Dim = Annotated[Any, AfterValidator(_dim)]  # a size, or the name of a dynamic axis


class Tensor(Section):
    """A tensor spec: numeric dtype, dims that are sizes or axis names."""

    name: str
    dtype: Annotated[str, AfterValidator(_dtype)]
    shape: Annotated[list[Dim], Field(min_length=1)]


class Output(Section):
    name: str
    shape: Annotated[list[Dim], Field(min_length=1)]

    @model_validator(mode="after")
    def _width(self) -> Output:
        if not isinstance(self.shape[-1], int) or not 1 <= self.shape[-1] <= 2**31:
            raise rule(f"{{field}} is {self.shape[-1]!r}: the last dimension must be the number of outputs.",
                       RECREATE, at="shape[-1]")
        return self


class Labels(Section):
    names: Names
    input: Optional[Tensor] = None


class TrainableTensor(Section):
    name: str


class Trainable(Section):
    tensors: list[TrainableTensor]


class L2SP(Section):
    strength: Annotated[Number, Field(ge=0)]
    tensors: Names


class Portable(Section):
    available: bool = False


class Cache(Section):
    available: bool = False
    boundary: Optional[list[Tensor]] = None
    raw_inputs: Optional[list[str]] = None

    @model_validator(mode="after")
    def _complete(self) -> Cache:
        for key in ("boundary", "raw_inputs"):
            if self.available and getattr(self, key) is None:
                raise rule("{field} is missing.", RECREATE, at=key)
        return self


class Source(Section):
    num_attention_heads: Optional[Size] = None
    hidden_size: Optional[Size] = None


def _session_config(config: dict[str, Any]) -> dict[str, Any]:
    for key, value in config.items():
        if key not in SESSION_CONFIG_KEYS:
            raise rule(f"{{field}} has the entry {key!r}, which edgeft does not know."[:200], RECREATE)
        if value not in SESSION_CONFIG_KEYS[key]:
            raise rule(f"{{field}} is {value!r}, not one of {', '.join(SESSION_CONFIG_KEYS[key])}."[:200], RECREATE,
                       at=key)
    return config


SessionConfig = Annotated[dict[str, Any], AfterValidator(_session_config)]


class Device(Section):
    name: str


class Prefix(Section):
    graph_optimization: Literal[GRAPH_OPTIMIZATIONS]  # type: ignore[valid-type]
    session_config: SessionConfig


class Common(Section):
    """The fields every folder with a model has (artifacts, packages, bundles)."""

    task: Literal[TASKS]  # type: ignore[valid-type]
    modality: Literal[MODALITIES]  # type: ignore[valid-type]
    loss: Literal[tuple(LOSSES)]  # type: ignore[valid-type]
    inputs: Annotated[list[Tensor], Field(min_length=1)]
    output: Output
    labels: Labels
    preprocessing: dict[str, Any]
    files: dict[str, Any]
    source: Source = None  # type: ignore[assignment]  # absent, or an object (null is refused)

    @model_validator(mode="after")
    def _agree(self) -> Common:
        if LOSSES[self.loss].task != self.task:
            raise rule(f"{{field}} is {self.loss!r}, which is a {LOSSES[self.loss].task} loss, but the task is "
                       f"{self.task!r}.", RECREATE, at="loss")
        if len({spec.name for spec in self.inputs}) != len(self.inputs):
            raise rule("{field} names an input more than once.", RECREATE, at="inputs")
        names, width = self.labels.names, self.output.shape[-1]
        if self.task == "embedding" and names:
            raise rule(f"{{field}} lists {len(names)} labels, but an embedding has none.", RECREATE, at="labels.names")
        if self.task in ("classification", "multi-label") and len(names) != width:
            raise rule(f"{{field}} lists {len(names)} labels, but the model has {width} outputs.", RECREATE,
                       at="labels.names")
        return self


class TrainableFolder(Common):
    """Artifacts and packages: what training reads."""

    name: str
    optimizer: Literal[tuple(OPTIMIZERS)]  # type: ignore[valid-type]
    trainable: Trainable
    l2sp: Optional[L2SP] = None
    portable: Portable = None  # type: ignore[assignment]
    cache: Optional[Cache] = None

    @model_validator(mode="after")
    def _labels_and_l2sp(self) -> TrainableFolder:
        spec = self.labels.input
        if spec is None:
            raise rule("{field} is missing.", RECREATE, at="labels.input")
        for key, value in label_input(self.loss, self.output.shape[-1]).items():
            if getattr(spec, key) != value:
                raise rule(f"{{field}} is {getattr(spec, key)!r}, but the {self.loss} loss needs {value!r}."[:200],
                           RECREATE, at=f"labels.input.{key}")
        if self.l2sp is not None:
            names = {tensor.name for tensor in self.trainable.tensors}
            for index, name in enumerate(self.l2sp.tensors):
                if name not in names:
                    raise rule(f"{{field}} is {name!r}, which is not a trainable tensor."[:200], RECREATE,
                               at=f"l2sp.tensors[{index}]")
        return self


class PackageFolder(TrainableFolder):
    device: Device
    prefix: Optional[Prefix] = None


class BundleFolder(Common):
    threads: Optional[Count] = None
    graph_optimization: Literal[GRAPH_OPTIMIZATIONS] = None  # type: ignore[valid-type,assignment]
    session_config: SessionConfig = None  # type: ignore[assignment]


# --- preprocessing, by modality --------------------------------------------------------------


class Text(Section):
    kind: Literal["tokenizer"]
    file: str
    max_length: Size
    pad_token_id: Annotated[int, Field(ge=0, le=2**31)]


class Resize(Section):
    """Either both sides or the shortest edge (a field given as null is refused, not ignored)."""

    height: Pixels = None  # type: ignore[assignment]
    width: Pixels = None  # type: ignore[assignment]
    shortest_edge: Pixels = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _one_form(self) -> Resize:
        given = sorted(set(self.model_fields_set) | set(self.model_extra or {}))
        if given not in (["height", "width"], ["shortest_edge"]):
            raise rule(f"{{field}} has {given}; allowed: ['height', 'width'] or ['shortest_edge'].", RECREATE)
        return self


class Crop(Section):
    model_config = ConfigDict(extra="forbid", strict=True)
    height: Pixels
    width: Pixels


def _channels(count: int) -> int:
    if count not in (1, 3):
        raise rule(f"{{field}} is {count}; images are read as 1 (grey) or 3 (RGB) channels.", RECREATE)
    return count


class Image(Section):
    kind: Literal["image"]
    width: Pixels
    height: Pixels
    channels: Annotated[int, AfterValidator(_channels)]
    rescale_factor: Number
    mean: list[Number]
    std: list[Number]
    resize: Optional[Resize] = None
    crop: Optional[Crop] = None
    resample: Literal[IMAGE_RESAMPLING] = None  # type: ignore[valid-type,assignment]
    rescale_offset: bool = None  # type: ignore[assignment]
    extra_std: Optional[list[Number]] = None

    @model_validator(mode="after")
    def _per_channel(self) -> Image:
        for key in ("mean", "std", "extra_std"):
            values = getattr(self, key)
            if values is not None and (len(values) != self.channels or key != "mean" and 0 in values):
                raise rule(f"{{field}} must hold {self.channels} number(s)" + (", none zero." if key != "mean" else "."),
                           RECREATE, at=key)
        if self.resize is not None and self.resize.shortest_edge and self.crop is None:
            raise rule("{field} is missing: a shortest-edge resize keeps each image's aspect ratio, and the model "
                       "takes one size.", RECREATE, at="crop")
        return self


class Audio(Section):
    kind: Literal["audio"]
    sampling_rate: Size
    features: Literal[AUDIO_FEATURES]  # type: ignore[valid-type]
    padding_value: Number
    samples: Optional[Annotated[int, Field(ge=1)]] = None
    normalize: Optional[bool] = None
    attention_mask: Optional[bool] = None
    hop_length: Optional[Size] = None
    fft_length: Optional[Size] = None
    mels: Optional[Size] = None
    frames: Optional[Size] = None
    file: Optional[str] = None
    mean: Optional[Number] = None
    std: Optional[Number] = None

    @model_validator(mode="after")
    def _recipe(self) -> Audio:
        needed = {"waveform": ("samples", "normalize", "attention_mask"),
                  "whisper-log-mel": ("samples", "normalize", "hop_length", "fft_length", "mels", "frames", "file"),
                  "kaldi-fbank": ("hop_length", "fft_length", "mels", "frames", "file")}[self.features]
        for key in needed:
            if getattr(self, key) is None:
                raise rule("{field} is missing.", RECREATE, at=key)
        if self.samples is not None and self.samples > 600 * self.sampling_rate:
            raise rule(f"{{field}} is {self.samples}, more than 10 minutes of audio.", RECREATE, at="samples")
        if self.features == "whisper-log-mel" and self.samples <= self.fft_length // 2:
            raise rule(f"{{field}} is {self.samples}, too few for a window of {self.fft_length}.", RECREATE,
                       at="samples")
        if self.features == "kaldi-fbank" and self.mean is not None and not self.std:
            raise rule("{field} is missing or 0.", RECREATE, at="std")
        return self

    def input_shapes(self) -> list[list[int]]:
        """The shapes (without the batch axis) of the inputs these features feed."""
        if self.features == "waveform":
            return [[self.samples]] * (2 if self.attention_mask else 1)
        if self.features == "whisper-log-mel":
            return [[self.mels, self.samples // self.hop_length]]
        return [[self.frames, self.mels]]


PREPROCESSING = {"text": Text, "image": Image, "audio": Audio}


def _folder_model(kind: str) -> type[Common]:
    return {"artifacts": TrainableFolder, "package": PackageFolder, "bundle": BundleFolder}.get(kind, Common)


def check_folder(where: Path, kind: str, data: dict[str, Any]) -> None:
    """Check the manifest ``data`` (of the file ``where``) of a folder of ``kind``: the kind's
    model, then the preprocessing of its modality, then what the two must agree on."""

    at = in_file(where)
    folder = check(_folder_model(kind), data, at, style=MANIFEST)
    model = PREPROCESSING.get(folder.modality)
    if model is None:
        return
    settings = check(model, folder.preprocessing, at, ("preprocessing",), style=MANIFEST)
    listed = [entry.get("path") for entry in folder.files.values() if isinstance(entry, Mapping)]
    file = getattr(settings, "file", None)
    if file is not None and file not in listed:
        raise EdgeftError(f"{MANIFEST.subject('preprocessing.file')} names {file!r}, which is not a file listed in "
                          "the manifest."[:300], where=at("preprocessing.file"), hint=RECREATE)
    if isinstance(settings, Audio):
        expected = settings.input_shapes()
        found = [spec.shape[1:] for spec in folder.inputs]
        if found != expected or settings.attention_mask and folder.inputs[1].name != "attention_mask":
            raise EdgeftError(f"{MANIFEST.subject('inputs')} do not match the preprocessing's {settings.features} "
                              f"features {expected}.", where=at("inputs"), hint=RECREATE)
