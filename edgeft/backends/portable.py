"""The portable training backend: training steps as plain ONNX graphs on any onnxruntime.

Runs the graphs export writes (see :mod:`edgeft.exporting.portable`) in ordinary
``onnxruntime.InferenceSession``s, so it needs no training build: it trains on Linux aarch64
(Raspberry Pi, Jetson), on Windows and on any onnxruntime release. It has the interface of
:class:`edgeft.backends.ort_training.OrtTrainer` and the same semantics: gradients of
successive ``train_step`` calls add up until ``optimizer_step`` applies and clears them, and
the optimizer is ORT's AdamW (or SGD) step for step.

The trainable tensors and optimizer moments live here as numpy arrays and are fed to the
graphs by name. When only the tail graphs exist (the frozen-prefix split) and the full model's
inputs are given (``--no-cache``), the frozen prefix runs as inference ahead of every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgeft.backends.state import STATE_FILE, TrainableState, read_state, resolve_checkpoint, write_state
from edgeft.errors import EdgeftError
from edgeft.manifest import L2SP_INPUT, TAIL_PREFIX, Manifest
from edgeft.ortcompat import prefix_session_options, quiet_runtime, session_options

STEP = "portable_step.onnx"  # {prefix}: forward, loss and gradients of the trainable tensors
EVAL = "portable_eval.onnx"  # {prefix}: forward and loss, dropout off
OPTIMIZER = "portable_optimizer.onnx"  # one AdamW or SGD update of every trainable tensor
CHECKPOINT = "portable_checkpoint.npz"  # initial values of the trainable tensors
GRAD_SUFFIX = "_grad"
ADAMW = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-6}  # onnxruntime.training's AdamW defaults


def optimizer_io(optimizer: str, names: list[str]) -> tuple[list[str], list[str]]:
    """Input and output names of the optimizer graph, in order."""
    inputs = ["learning_rate", "step", "weight_decay"]
    outputs = []
    for i, _ in enumerate(names):
        inputs += [f"param.{i}", f"grad.{i}"] + ([f"m1.{i}", f"m2.{i}"] if optimizer == "adamw" else [])
        outputs += [f"new_param.{i}"] + ([f"new_m1.{i}", f"new_m2.{i}"] if optimizer == "adamw" else [])
    return inputs, outputs


STEP_KEEPS = ["EliminateDropout"]  # optimizers the step session must not run (see PortableTrainer)


def step_session_options(threads: int | None):  # -> onnxruntime.SessionOptions
    """All optimizations on (the step graph gains fused MatMul-Transpose kernels), fixed threads."""
    import onnxruntime as ort

    options = session_options(threads)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # step, optimizer and eval sessions take turns on the same cores: threads that spin-wait
    # after a run would take them from the next session (measured: ~20% slower steps on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # batches change shape from step to step (length bucketing): a memory pattern planned per shape
    # kept ~2x the activation memory of the longest batch and ran slower (measured: MiniLM last:1 at
    # sequence 96, +530 MB with it, +290 MB without; steps 5-10% faster without)
    options.enable_mem_pattern = False
    return options


def available(manifest: Manifest) -> bool:
    """True when the artifact folder holds the portable graphs."""
    return bool(manifest.data.get("portable", {}).get("available"))


class PortableTrainer:
    """Step, eval and optimizer graphs of one artifact set in plain inference sessions."""

    backend = "portable"
    weighted_steps = True  # train_step takes a weight: a long batch may run in pieces (see the loop)

    def __init__(self, manifest: Manifest, threads: int | None = None, checkpoint: Path | None = None,
                 prefix: str = "", weight_decay: float = 0.0, l2sp: float | None = None) -> None:
        import onnxruntime as ort

        if not available(manifest):
            reason = manifest.data.get("portable", {}).get("reason", "exported by an older edgeft")
            raise EdgeftError(f"This artifact folder has no portable training graphs ({reason}).",
                              where=str(manifest.folder),
                              hint="re-export it with this edgeft version, or use --backend ort-training.")
        quiet_runtime()
        self.manifest = manifest
        files = manifest.data["files"]
        self.prefix_session = None
        if f"{prefix}portable_step" in files:
            graphs = prefix
        elif prefix == "" and f"{TAIL_PREFIX}portable_step" in files:
            graphs = TAIL_PREFIX  # train "through the full graph": the frozen prefix runs every step
        else:
            raise EdgeftError(f"This artifact folder has no portable graphs for the {prefix or 'full'} set.",
                              where=str(manifest.folder), hint="re-export it with this edgeft version.")
        options = step_session_options(threads)
        providers = ["CPUExecutionProvider"]
        try:
            # ONNX Runtime's inference optimizer removes Dropout (EliminateDropout, from the basic
            # level on) whatever its training_mode input says: the step graph's masks would be all ones
            self.step_session = ort.InferenceSession(str(manifest.path(f"{graphs}portable_step")), options,
                                                     providers=providers, disabled_optimizers=STEP_KEEPS)
            self.eval_session = ort.InferenceSession(str(manifest.path(f"{graphs}portable_eval")), options,
                                                     providers=providers)
            self.optimizer_session = ort.InferenceSession(str(manifest.path("portable_optimizer")), options,
                                                          providers=providers)
            if graphs != prefix:
                self.prefix_session = ort.InferenceSession(str(manifest.path("prefix_model")),
                                                           prefix_session_options(manifest.data, threads),
                                                           providers=providers)
        except Exception as exc:
            raise EdgeftError(f"onnxruntime could not load the portable training graphs: {exc}",
                              where=str(manifest.folder), hint="re-export the artifacts with this edgeft version.") from exc
        self.optimizer = str(manifest.data["optimizer"])
        self.names = [t["name"] for t in manifest.data["trainable"]["tensors"]]
        self._name_set = set(self.names)
        step_inputs = [i.name for i in self.step_session.get_inputs()]
        self.model_inputs = [n for n in step_inputs if n not in self._name_set and n not in ("labels", L2SP_INPUT)]
        self.has_l2sp = L2SP_INPUT in step_inputs
        self.l2sp = (manifest.l2sp or 0.0) if l2sp is None else float(l2sp)  # fed to training steps only
        self.output_names = [o.name for o in self.step_session.get_outputs()]
        self.grad_names = [f"{n}{GRAD_SUFFIX}" for n in self.names]
        if self.prefix_session is not None:
            boundary = {o.name for o in self.prefix_session.get_outputs()}
            raw = [n for n in self.model_inputs if n not in boundary]
            self.prefix_inputs = [i.name for i in self.prefix_session.get_inputs()]
            self.input_names = list(dict.fromkeys(self.prefix_inputs + raw)) + ["labels"]
        else:
            self.input_names = self.model_inputs + ["labels"]
        self.opt_inputs, self.opt_outputs = optimizer_io(self.optimizer, self.names)
        self._check_interfaces()
        self._declared = {i.name: tuple(i.shape) for i in self.step_session.get_inputs() if i.name in self._name_set}
        self.learning_rate = 1e-3
        self.weight_decay = float(weight_decay)
        self.grads: list[np.ndarray] | None = None
        initial = read_state(manifest.path("portable_checkpoint"))
        self._set_state(initial)
        if checkpoint is not None:
            self._set_state(read_state(resolve_checkpoint(checkpoint)))

    def _check_interfaces(self) -> None:
        """The graphs take and give what the manifest says (a folder whose file entries were swapped
        or edited is refused here, not deep inside a training step)."""
        step_in = [i.name for i in self.step_session.get_inputs()]
        wanted = set(self.names) | {"labels"}
        problems = []
        if not wanted <= set(step_in) or self.output_names[:1] != ["loss"] \
                or not set(self.grad_names) <= set(self.output_names):
            problems.append("the training step graph")
        if [i.name for i in self.eval_session.get_inputs()] != step_in:
            problems.append("the eval graph")
        if {i.name for i in self.optimizer_session.get_inputs()} != set(self.opt_inputs):
            problems.append("the optimizer graph")
        if self.prefix_session is not None and \
                not {o.name for o in self.prefix_session.get_outputs()} & set(self.model_inputs):
            problems.append("the frozen prefix")
        if problems:
            raise EdgeftError(f"The portable training graphs do not match the manifest ({', '.join(problems)} "
                              "takes or gives other tensors than listed).", where=str(self.manifest.folder),
                              hint="the folder does not match its manifest; re-export it.")

    # --- state ---------------------------------------------------------------------------

    def _set_state(self, state: TrainableState) -> None:
        missing = [n for n in self.names if n not in state.params]
        if missing:
            raise EdgeftError(f"The checkpoint lacks the trainable tensors {missing[:3]}.", where="checkpoint",
                              hint="use a checkpoint of a run on these artifacts.")
        self.params = [np.ascontiguousarray(state.params[n], dtype=np.float32).reshape(self._shape(n, state))
                       for n in self.names]
        self.moments: list[list[np.ndarray]] = []
        if self.optimizer == "adamw":
            for n, p in zip(self.names, self.params):
                found = state.moments.get(n)
                self.moments.append([np.ascontiguousarray(m, dtype=np.float32).reshape(p.shape) for m in found]
                                    if found and len(found) == 2 else [np.zeros_like(p), np.zeros_like(p)])
        self.step = int(state.step)
        self.grads = None

    def _shape(self, name: str, state: TrainableState) -> tuple[int, ...]:
        """The shape the step graph declares for a trainable tensor; a checkpoint value of another size is
        refused (a checkpoint of other artifacts, or a damaged one)."""
        declared = self._declared.get(name)
        value = np.asarray(state.params[name])
        if declared is None or not all(isinstance(d, int) for d in declared):
            return value.shape
        if value.size != int(np.prod(declared, dtype=np.int64)):
            raise EdgeftError(f"The checkpoint's tensor {name} has shape {list(value.shape)}, but the training graph "
                              f"needs {list(declared)}.", where="checkpoint",
                              hint="use a checkpoint of a run on these artifacts.")
        return tuple(declared)

    def save_checkpoint(self, folder: Path) -> None:
        """Write the trainable tensors, optimizer moments and step into a checkpoint folder."""
        write_state(Path(folder) / STATE_FILE, self.names, self.params, self.optimizer, self.step,
                    self.moments or None)

    # --- steps ---------------------------------------------------------------------------

    def _feed(self, batch: Mapping[str, np.ndarray], training: bool) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise EdgeftError(f"The batch lacks the model inputs {missing}.", where=str(self.manifest.folder),
                              hint="check that the data matches the model's inputs in the manifest.")
        if self.prefix_session is not None:
            made = self.prefix_session.run(None, {n: np.ascontiguousarray(batch[n]) for n in self.prefix_inputs})
            values = dict(zip((o.name for o in self.prefix_session.get_outputs()), made))
            feed = {n: values[n] if n in values else np.ascontiguousarray(batch[n]) for n in self.model_inputs}
        else:
            feed = {n: np.ascontiguousarray(batch[n]) for n in self.model_inputs}
        feed["labels"] = np.ascontiguousarray(batch["labels"])
        feed.update(zip(self.names, self.params))
        if self.has_l2sp:
            feed[L2SP_INPUT] = np.array([self.l2sp if training else 0.0], np.float32)
        return feed

    def train_step(self, batch: Mapping[str, np.ndarray], weight: float = 1.0) -> tuple[float, np.ndarray]:
        """Forward + backward on one batch (gradients accumulate, scaled by ``weight``: a piece of a
        batch counts by its share of it); returns (loss, outputs)."""
        results = self.step_session.run(None, self._feed(batch, training=True))
        loss, outputs, grads = results[0], results[1], results[2:]
        if weight != 1.0:
            for grad in grads:
                grad *= np.float32(weight)
        if self.grads is None:
            self.grads = grads
        else:
            for total, grad in zip(self.grads, grads):
                np.add(total, grad, out=total)
        return float(loss), outputs

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients (one optimizer update) and clear them."""
        if self.grads is None:
            return
        feed = {"learning_rate": np.array(self.learning_rate, np.float32),
                "step": np.array(self.step + 1, np.int64),
                "weight_decay": np.array(self.weight_decay, np.float32)}
        values = iter(self.opt_inputs[3:])
        for i, (param, grad) in enumerate(zip(self.params, self.grads)):
            feed[next(values)] = param
            feed[next(values)] = grad
            if self.moments:
                feed[next(values)] = self.moments[i][0]
                feed[next(values)] = self.moments[i][1]
        results = iter(self.optimizer_session.run(self.opt_outputs, feed))
        for i in range(len(self.params)):
            self.params[i] = next(results)
            if self.moments:
                self.moments[i] = [next(results), next(results)]
        self.step += 1
        self.grads = None

    def eval_step(self, batch: Mapping[str, np.ndarray]) -> tuple[float, np.ndarray]:
        """Loss and model outputs without gradients (dropout off)."""
        loss, outputs = self.eval_session.run(None, self._feed(batch, training=False))
        return float(loss), outputs

    def parameters(self) -> dict[str, np.ndarray]:
        """Current values of the trainable parameters, by name."""
        return {n: p.copy() for n, p in zip(self.names, self.params)}

    def gradients(self) -> dict[str, np.ndarray]:
        """Gradients accumulated since the last optimizer step, by parameter name."""
        return {} if self.grads is None else {n: g.copy() for n, g in zip(self.names, self.grads)}

    def set_learning_rate(self, value: float) -> None:
        self.learning_rate = float(value)

    def load_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite trainable parameters by name (optimizer moments are kept)."""
        for i, name in enumerate(self.names):
            if name in values:
                self.params[i] = np.ascontiguousarray(values[name], dtype=np.float32).reshape(self.params[i].shape)

