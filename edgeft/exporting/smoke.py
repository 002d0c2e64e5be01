"""The training step export runs before it reports success: every written format, checked
against the full forward graph's loss, then one real step (finite loss, gradients, outputs of
the model's shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgeft.errors import EdgeftError
from edgeft.exporting.ort_artifacts import ORT_FORMAT
from edgeft.exporting.source import LoadedModel, sample_array
from edgeft.manifest import TAIL_PREFIX, Manifest
from edgeft.ortcompat import session_options


def _reference_loss(forward: Path, batch: dict[str, np.ndarray], manifest: Manifest) -> float:
    """The loss of the full forward graph (dropout off) on ``batch``, computed with plain onnxruntime."""
    import onnxruntime as ort

    from edgeft.deployment.inference_model import drop_dropout
    from edgeft.deployment.runtime import loss_value

    model = onnx.load(str(forward))
    drop_dropout(model)
    session = ort.InferenceSession(model.SerializeToString(), session_options(None),
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    outputs = session.run([manifest.data["output"]["name"]], {k: v for k, v in batch.items() if k in names})[0]
    return loss_value(manifest.task, outputs, batch["labels"], manifest.data["loss"])


def smoke_step(manifest: Manifest, loaded: LoadedModel, seed: int) -> float:
    """Run one training step of every written format and check that each computes the full
    graph's loss (through the frozen prefix and the tail where the folder is split)."""
    # the contrastive loss needs groups of two beside other groups to be more than 0
    size = 4 if manifest.task == "embedding" else 2
    batch = {spec.name: sample_array(spec, seed, {"batch": size}) for spec in loaded.inputs}
    labels = manifest.data["labels"]["input"]
    shape = [d if isinstance(d, int) else size for d in labels["shape"]]
    batch["labels"] = np.zeros(shape, dtype=labels["dtype"])
    if manifest.task == "embedding":
        batch["labels"] = np.array([0, 0, 1, 1], dtype=np.int64)
    expected = _reference_loss(manifest.path("forward_model"), batch, manifest)
    trainers = []
    if manifest.data["portable"]["available"]:
        from edgeft.backends.portable import PortableTrainer

        trainers.append(PortableTrainer(manifest))  # runs the prefix ahead of the tail where split
    if ORT_FORMAT in manifest.data["formats"]:
        from edgeft.backends.ort_training import OrtTrainer

        trainers.append(OrtTrainer(manifest))
        if manifest.data["cache"]["available"]:
            trainers.append(_OrtCachedPath(manifest))
    first_loss = float("nan")
    for trainer in trainers:
        before, _ = trainer.eval_step(batch)
        if not np.isclose(before, expected, rtol=1e-4, atol=1e-6):
            raise EdgeftError(f"The {trainer.backend} training graphs give loss {before}, the forward graph {expected}.",
                              where=str(manifest.folder), hint="report this model; export with --train head meanwhile.")
        loss, outputs = trainer.train_step(batch)
        gradients = trainer.gradients()
        trainer.optimizer_step()
        after, _ = trainer.eval_step(batch)
        if not (np.isfinite(loss) and np.isfinite(after) and all(np.isfinite(g).all() for g in gradients.values())):
            raise EdgeftError(f"The first training step gave a non-finite loss or gradient ({loss}).",
                              where=str(manifest.folder), hint="check the model's numerics, or try --train head.")
        shape = (size, loaded.num_outputs)
        if tuple(np.asarray(outputs).shape) != shape:
            raise EdgeftError(f"The model's output has shape {np.asarray(outputs).shape}, expected {shape}.",
                              where=loaded.output, hint="the model's output must be [batch, labels].")
        first_loss = loss if np.isnan(first_loss) else first_loss
    return first_loss


class _OrtCachedPath:
    """ORT's tail artifacts fed by the prefix, with the trainer interface the smoke step uses."""

    backend = "ort-training (cached path)"

    def __init__(self, manifest: Manifest) -> None:
        import onnxruntime as ort

        from edgeft.backends.ort_training import OrtTrainer

        self.trainer = OrtTrainer(manifest, prefix=TAIL_PREFIX)
        self.prefix = ort.InferenceSession(str(manifest.path("prefix_model")), session_options(None),
                                           providers=["CPUExecutionProvider"])
        self.raw = manifest.data["cache"]["raw_inputs"]

    def _tail(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {i.name: batch[i.name] for i in self.prefix.get_inputs()}
        tail = dict(zip((o.name for o in self.prefix.get_outputs()), self.prefix.run(None, feed)))
        tail.update({name: batch[name] for name in self.raw})
        tail["labels"] = batch["labels"]
        return tail

    def eval_step(self, batch: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
        return self.trainer.eval_step(self._tail(batch))

    def train_step(self, batch: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
        return self.trainer.train_step(self._tail(batch))

    def gradients(self) -> dict[str, np.ndarray]:
        return self.trainer.gradients()

    def optimizer_step(self) -> None:
        self.trainer.optimizer_step()
