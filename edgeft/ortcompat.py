"""Facts about the installed ONNX Runtime that artifacts must respect (device side).

The highest ONNX IR version the runtime loads is probed once with a tiny model rather than read
from a table, so a newer or older runtime on a device is handled without a code change.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import logging
import os
import sys
import tempfile
import types
from collections.abc import Iterator


from edgeft.errors import EdgeftError

# ONNX Runtime's graph optimization levels, as profiles and manifests name them
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")

# How to get ONNX Runtime's training API (the optional ort-training extra), said wherever it is missing.
TRAINING_INSTALL_HINT = (
    "install ONNX Runtime's training build in place of onnxruntime, as the README's \"ONNX Runtime's "
    "training API\" section shows (pip install 'edgeft[ort-training]', then replace onnxruntime by "
    "onnxruntime-training-cpu 1.19.2; Linux x86_64 or macOS arm64, Python 3.9-3.12)")


@functools.lru_cache(maxsize=1)
def max_ir_version() -> int:
    """Highest ONNX IR version the installed onnxruntime accepts (probed, then cached)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    for version in range(onnx.IR_VERSION, 6, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = version
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            return version
        except Exception:  # the runtime refuses IR versions it does not know
            continue
    return 7


def training_api() -> types.ModuleType:
    """``onnxruntime.training.api`` loaded without torch.

    The ``onnxruntime/training/__init__.py`` of onnxruntime-training-cpu 1.19.2 imports its
    ``optim`` helpers, which ``import torch`` unconditionally, so on a device without torch the
    training API cannot be imported although it needs only the runtime. When that import fails,
    the package is registered without running its ``__init__`` and the ``api`` subpackage (pure
    bindings) is imported directly.
    """
    try:
        from onnxruntime.training import api

        return api
    except ImportError as exc:
        spec = importlib.util.find_spec("onnxruntime.training")
        if spec is None or not spec.submodule_search_locations:
            raise EdgeftError("The installed onnxruntime has no training API.", where="onnxruntime",
                              hint=f"train with the portable backend, or {TRAINING_INSTALL_HINT}.") from exc
        package = types.ModuleType("onnxruntime.training")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["onnxruntime.training"] = package
        return importlib.import_module("onnxruntime.training.api")


def has_training_api() -> bool:
    """True when the ONNX Runtime build in this environment includes the training API."""
    return importlib.util.find_spec("onnxruntime.training") is not None


def usable_threads(threads: int | None) -> int | None:
    """``threads`` capped at this machine's CPU count.

    A profile says how many threads its device should use; measuring or running with more
    threads than there are cores here only makes them wait on each other.
    """
    if not threads:
        return None
    return max(1, min(int(threads), os.cpu_count() or int(threads)))


def session_options(threads: int | None, optimization: str | None = None,
                    config: dict[str, str] | None = None):  # -> onnxruntime.SessionOptions
    """Session options with ``threads`` compute threads (capped, see ``usable_threads``; None lets
    ORT choose) and one inter-op thread, a graph optimization level (disable, basic, extended
    or all; None: ORT's default) and session config entries: the base every edgeft session starts from."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = session_log_severity()  # warnings only when shown (runtime_logs)
    threads = usable_threads(threads)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimization is not None:
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


def prefix_session_options(manifest_data: dict, threads: int | None):  # -> onnxruntime.SessionOptions
    """Options for the frozen prefix of a folder: a device package's prefix may be quantized and
    need its recorded optimization level and session config (weight-only int8: fold once at load)."""
    prefix = manifest_data.get("prefix") or {}
    return session_options(threads, prefix.get("graph_optimization"), prefix.get("session_config"))


def runtime_versions() -> dict[str, str]:
    """Versions of the runtime packages, recorded in manifests for later compatibility checks."""
    import numpy
    import onnx
    import onnxruntime as ort

    return {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "numpy": numpy.__version__}


# Whether ONNX Runtime's warnings are shown (`edgeft deploy -v`); a context variable, so turning
# them on for one call changes nothing for the rest of the process.
_RUNTIME_LOGS: contextvars.ContextVar[bool] = contextvars.ContextVar("edgeft_runtime_logs", default=False)


@contextlib.contextmanager
def runtime_logs(shown: bool) -> Iterator[None]:
    """Show (``shown``) or hide ONNX Runtime's warnings within the block: its Python tools'
    (quantizer, transformer optimizer) and its sessions' log."""
    token = _RUNTIME_LOGS.set(shown)
    try:
        yield
    finally:
        _RUNTIME_LOGS.reset(token)


def session_log_severity() -> int:
    """ONNX Runtime's log severity for a session: 2 (warnings) when shown, else 3 (errors only)."""
    return 2 if _RUNTIME_LOGS.get() else 3


class _FromOnnxRuntime(logging.Filter):
    """Drops the records logged from onnxruntime's own Python files."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.ERROR and record.pathname.startswith(self.folder))


@contextlib.contextmanager
def quiet_python_logs() -> Iterator[None]:
    """Hide the warnings ONNX Runtime's Python tools log (about 15 lines of "Failed to remove node
    input" while fusing a DistilBERT, the quantizer's advice on the root logger) unless they are
    shown (:func:`runtime_logs`). Only records from onnxruntime's files are held back, and only
    for the duration: the caller's own logging is untouched."""
    spec = importlib.util.find_spec("onnxruntime")
    if _RUNTIME_LOGS.get() or spec is None or not spec.submodule_search_locations:
        yield
        return
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "")
    quiet, root = _FromOnnxRuntime(folder), logging.getLogger()
    # The root logger sees what its tools log with logging.warning(...); records of their module
    # loggers (named "fusion_attention" and the like: onnxruntime.transformers puts its folder on
    # sys.path) reach the root's handlers, or Python's last-resort handler when there are none.
    targets = [root, *root.handlers, *([logging.lastResort] if logging.lastResort else [])]
    for target in targets:
        target.addFilter(quiet)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(quiet)


def quiet_runtime() -> None:
    """Keep ONNX Runtime's own log to errors: its info and warning lines are not the user's concern."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)


@contextlib.contextmanager
def captured_native_output() -> Iterator[list[str]]:
    """Capture what native code writes to stdout/stderr (file descriptors 1 and 2).

    ONNX Runtime's graph builders log through C++ streams that Python cannot silence; the
    captured text is kept so an error can quote it. Yields a list that receives the text.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    captured: list[str] = []
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))
