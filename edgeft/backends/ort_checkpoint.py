"""ONNX Runtime's training checkpoint (the flatbuffer of ``ort_training_checkpoint.fbs``), read
and written through the Python bindings that ONNX Runtime generates from that schema.

Every onnxruntime wheel, the plain inference build included, ships those generated bindings
(``onnxruntime/tools/ort_format_model/ort_flatbuffers_py``) and depends on ``flatbuffers``. So a
checkpoint written by the ORT training backend resumes in the portable backend, moments
included, on a device whose onnxruntime has no training API, and the reverse.

The bindings import each other as the top-level package ``ort_flatbuffers_py``. ONNX Runtime's
own tools make that work by appending to ``sys.path`` in ``onnxruntime.tools``, whose
``__init__`` also imports torch when it is installed; :func:`_schema` loads the package from its
folder instead, registering only that name, and only when a checkpoint is first read or written.
"""

from __future__ import annotations

import importlib
import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from edgeft.errors import EdgeftError

PACKAGE = "ort_flatbuffers_py"
IDENTIFIER = b"ODTC"  # the schema's file_identifier, bytes 4 to 8 of a checkpoint
# TensorDataType of the schema -> numpy
_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
          10: np.float16, 11: np.float64}
_TYPE_CODES = {np.dtype(v): k for k, v in _NUMPY.items()}
_HINT = "give a checkpoint written by edgeft train."
# what the generated readers raise on truncated or garbled bytes
_DAMAGED = (ValueError, TypeError, struct.error, IndexError, UnicodeDecodeError)


def _schema() -> ModuleType:
    """The generated ``fbs`` package (tables Checkpoint, ModuleState, Tensor, OptimizerGroup,
    ParameterOptimizerState), from the installed onnxruntime."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.find_spec("onnxruntime")  # finds the folder without importing onnxruntime
        folder = (Path(spec.origin).parent if spec and spec.origin else Path()) / "tools" / "ort_format_model" / PACKAGE
        init = folder / "__init__.py"
        if not init.is_file():
            raise EdgeftError(f"This onnxruntime has no flatbuffer bindings for its checkpoint format ({folder}).",
                              where=str(folder), hint="reinstall onnxruntime (pip install --force-reinstall onnxruntime).")
        package_spec = importlib.util.spec_from_file_location(PACKAGE, init, submodule_search_locations=[str(folder)])
        assert package_spec is not None and package_spec.loader is not None
        package = importlib.util.module_from_spec(package_spec)
        sys.modules[PACKAGE] = package
        package_spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.fbs")


def is_ort_checkpoint(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 8 bytes or more) is an ORT checkpoint."""
    return head[4:8] == IDENTIFIER


def _tensor(tensor) -> tuple[str, np.ndarray]:
    name = (tensor.Name() or b"").decode("utf-8")
    dtype = _NUMPY.get(tensor.DataType())
    if dtype is None or tensor.ExternalDataOffset() != -1:
        raise ValueError(f"tensor {name}: unsupported data type or external data")
    dims = [int(d) for d in tensor.DimsAsNumpy()] if tensor.DimsLength() else []
    raw = tensor.RawDataAsNumpy() if tensor.RawDataLength() else np.zeros(0, np.uint8)
    return name, raw.view(dtype).reshape(dims).copy()  # one copy, out of the file's buffer


def _root(buf: bytes):
    fbs = _schema()
    if not is_ort_checkpoint(buf):
        raise ValueError("no ODTC identifier")
    root = fbs.Checkpoint.Checkpoint.GetRootAs(buf, 0)
    module = root.ModuleState()
    if module is None:
        raise ValueError("no module state")
    if module.HasExternalData():
        raise ValueError("parameters stored in an external data file")
    return root, module


Moments = dict[str, list[np.ndarray]]  # parameter name -> its optimizer momentums (AdamW: m1, m2)


def read_ort_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], Moments, int]:
    """Trainable parameters, momentums (of the parameters that have some) and optimizer step of
    an ONNX Runtime training checkpoint."""
    buf = Path(path).read_bytes()
    try:
        root, module = _root(buf)
        params = dict(_tensor(module.RequiresGradParams(i)) for i in range(module.RequiresGradParamsLength()))
        moments: Moments = {}
        step = 0
        for g in range(root.OptimizerGroupsLength()):
            group = root.OptimizerGroups(g)
            step = int(group.Step())
            for s in range(group.OptimizerStatesLength()):
                state = group.OptimizerStates(s)
                moments[(state.ParamName() or b"").decode("utf-8")] = [
                    _tensor(state.Momentums(m))[1] for m in range(state.MomentumsLength())]
    except _DAMAGED as exc:
        raise EdgeftError(f"{path} is not a readable ONNX Runtime checkpoint ({exc}).", where=str(path),
                          hint=_HINT) from exc
    return params, {k: v for k, v in moments.items() if v}, step


def _module_tensors(path: Path) -> tuple[int, list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    try:
        root, module = _root(Path(path).read_bytes())
        return (root.Version(), [_tensor(module.RequiresGradParams(i)) for i in range(module.RequiresGradParamsLength())],
                [_tensor(module.FrozenParams(i)) for i in range(module.FrozenParamsLength())])
    except _DAMAGED as exc:
        raise EdgeftError(f"{path} cannot be used as a template checkpoint ({exc}).", where=str(path),
                          hint="re-export the artifacts with this edgeft version.") from exc


def write_ort_checkpoint(path: Path, template: Path, params: dict[str, np.ndarray], moments: Moments,
                         step: int) -> None:
    """An ONNX Runtime checkpoint holding ``params``, their ``moments`` and ``step``, with the
    frozen tensors of ``template`` (the artifacts' own checkpoint): how edgeft's .npz state
    resumes in the ORT training backend exactly."""
    import flatbuffers

    fbs = _schema()
    version, trainable, frozen = _module_tensors(template)
    builder = flatbuffers.Builder(1 << 20)

    def tensor(name: str, value: np.ndarray) -> int:
        value = np.ascontiguousarray(value)
        raw = builder.CreateByteVector(value.tobytes())
        fbs.Tensor.StartDimsVector(builder, value.ndim)
        for dim in reversed(value.shape):
            builder.PrependInt64(int(dim))
        dims = builder.EndVector()
        label = builder.CreateString(name)
        fbs.Tensor.Start(builder)
        fbs.Tensor.AddName(builder, label)
        fbs.Tensor.AddDims(builder, dims)
        fbs.Tensor.AddDataType(builder, _TYPE_CODES[value.dtype])
        fbs.Tensor.AddRawData(builder, raw)
        return fbs.Tensor.End(builder)

    def vector(start, offsets: list[int]) -> int:
        start(builder, len(offsets))
        for offset in reversed(offsets):
            builder.PrependUOffsetTRelative(offset)
        return builder.EndVector()

    params = [tensor(name, np.asarray(params.get(name, value), dtype=value.dtype).reshape(value.shape))
              for name, value in trainable]
    frozen_offsets = [tensor(name, value) for name, value in frozen]
    requires_grad = vector(fbs.ModuleState.StartRequiresGradParamsVector, params)
    frozen_vector = vector(fbs.ModuleState.StartFrozenParamsVector, frozen_offsets)
    fbs.ModuleState.Start(builder)
    fbs.ModuleState.AddRequiresGradParams(builder, requires_grad)
    fbs.ModuleState.AddFrozenParams(builder, frozen_vector)
    module = fbs.ModuleState.End(builder)
    group_vector = None
    if moments:
        states = []
        for name, value in trainable:
            if not moments.get(name):
                continue
            tensors = [tensor(f"momentum{k}", np.asarray(m, dtype=np.float32).reshape(value.shape))
                       for k, m in enumerate(moments[name])]
            momentums = vector(fbs.ParameterOptimizerState.StartMomentumsVector, tensors)
            label = builder.CreateString(name)
            fbs.ParameterOptimizerState.Start(builder)
            fbs.ParameterOptimizerState.AddParamName(builder, label)
            fbs.ParameterOptimizerState.AddMomentums(builder, momentums)
            states.append(fbs.ParameterOptimizerState.End(builder))
        state_vector = vector(fbs.OptimizerGroup.StartOptimizerStatesVector, states)
        group_name = builder.CreateString("group0")
        fbs.OptimizerGroup.Start(builder)
        fbs.OptimizerGroup.AddGroupName(builder, group_name)
        fbs.OptimizerGroup.AddStep(builder, int(step))
        fbs.OptimizerGroup.AddInitialLearningRate(builder, 1e-3)
        fbs.OptimizerGroup.AddOptimizerStates(builder, state_vector)
        group_vector = vector(fbs.Checkpoint.StartOptimizerGroupsVector, [fbs.OptimizerGroup.End(builder)])
    fbs.Checkpoint.Start(builder)
    fbs.Checkpoint.AddVersion(builder, version)
    fbs.Checkpoint.AddModuleState(builder, module)
    if group_vector is not None:
        fbs.Checkpoint.AddOptimizerGroups(builder, group_vector)
    builder.Finish(fbs.Checkpoint.End(builder), file_identifier=IDENTIFIER)
    Path(path).write_bytes(bytes(builder.Output()))
