"""PyTorch module -> ONNX forward graph ready for ORT training.

Three things matter for a training graph and are handled here:
- the forward order of parameters (found with hooks and a torch function mode) drives ``head`` /
  ``last:N`` selection;
- module modes: the frozen part is exported as inference (no dropout, BatchNorm on running
  statistics) so it can later be cached; dropout stays live only in the trainable part;
- the exporter runs with the root module in training mode (``TrainingMode.PRESERVE``), which
  keeps equal-valued parameters as separate initializers instead of merging them.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import onnx
import torch
from torch import nn

from edgeft.errors import EdgeftError

OPSET = 17


class PositionalModel(nn.Module):
    """Positional inputs in (the exporter's calling convention), the output tensor alone out.

    The output is the model's ``logits`` when it has them (transformers outputs), else the first
    element of a tuple or dict, else the tensor itself.
    """

    def __init__(self, model: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.input_names, inputs)))
        if getattr(out, "logits", None) is not None:
            return out.logits
        if isinstance(out, (tuple, list)):
            return out[0]
        if isinstance(out, dict):
            return next(iter(out.values()))
        return out


@dataclass
class ForwardTrace:
    """What one forward pass of the sample shows about a module.

    ``order``: the parameters in the order the pass first uses them (unused ones are left out);
    ``shared``: those of modules it calls more than once (ALBERT runs one layer's weights as
    every layer); ``used_before``: for each module it calls, how many parameters of ``order``
    it had used by that module's first call (its own included).
    """

    order: list[str]
    shared: list[str]
    used_before: dict[str, int]

    def called_after(self, trainable: set[str]) -> set[str]:
        """The modules first called once the pass has used a trainable parameter."""
        first = next((index for index, name in enumerate(self.order) if name in trainable), None)
        return set() if first is None else {name for name, used in self.used_before.items() if used > first}


def trace_forward(module: nn.Module, sample: Mapping[str, torch.Tensor]) -> ForwardTrace:
    """Run ``module`` on ``sample`` once and record its :class:`ForwardTrace`.

    A module's own parameters count from its call (a forward pre-hook); a parameter a module
    reads from another without calling it (DeBERTa's encoder reads ``rel_embeddings.weight``)
    counts from the first torch operation it enters.
    """
    from torch.overrides import TorchFunctionMode

    canonical = {id(p): n for n, p in module.named_parameters()}
    owners = {id(m): name for name, m in module.named_modules()}
    seen: list[str] = []
    calls: dict[str, int] = {}
    used_before: dict[str, int] = {}

    def use(param: nn.Parameter) -> None:
        name = canonical[id(param)]
        if name not in seen:
            seen.append(name)

    def record(mod: nn.Module, _args: object) -> None:
        name = owners[id(mod)]
        calls[name] = calls.get(name, 0) + 1
        for param in mod.parameters(recurse=False):
            use(param)
        used_before.setdefault(name, len(seen))

    class Uses(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            for value in [*args, *(kwargs or {}).values()]:
                if isinstance(value, nn.Parameter) and id(value) in canonical:
                    use(value)
            return func(*args, **(kwargs or {}))

    handles = [mod.register_forward_pre_hook(record) for mod in module.modules()]
    try:
        with torch.no_grad(), Uses():
            module(*sample.values())
    finally:
        for handle in handles:
            handle.remove()
    repeated = {name for name, count in calls.items() if count > 1}
    return ForwardTrace(order=seen, shared=[n for n in seen if n.rpartition(".")[0] in repeated], used_before=used_before)


def set_export_modes(module: nn.Module, trainable: set[str], dropout: bool, trace: ForwardTrace | None = None) -> None:
    """Eval mode everywhere except the trainable part, whose dropout stays live if asked.

    A module without parameters (a Dropout) is live when its parent holds trainable parameters
    and, given the forward ``trace``, it first runs after the pass has used a trainable
    parameter: Wav2Vec2's encoder applies a dropout before all its layers, which belongs to the
    frozen prefix even when the encoder's last layer trains.
    """
    module.eval()
    module.training = True  # root flag only: the exporter then keeps parameters distinct
    if not dropout:
        return
    downstream = trace.called_after(trainable) if trace is not None else None
    names = dict(module.named_modules())
    for name, mod in names.items():
        if not name or isinstance(mod, nn.modules.batchnorm._BatchNorm):
            continue
        params = [n for n, _ in mod.named_parameters(prefix=name)]
        if params:
            live = all(p in trainable for p in params)
        else:
            parent = names[name.rpartition(".")[0]] if "." in name else module
            parent_name = name.rpartition(".")[0]
            live = any(n in trainable for n, _ in parent.named_parameters(prefix=parent_name)) and \
                (downstream is None or name in downstream)
        if live:
            mod.training = True


def export_onnx(module: nn.Module, sample: Mapping[str, torch.Tensor], output_names: list[str],
                dynamic_axes: Mapping[str, Mapping[int, str]]) -> onnx.ModelProto:
    """Export with the TorchScript exporter in the form ORT's gradient builder accepts."""
    buffer = io.BytesIO()
    names = list(sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (e.g. padding_idx) is not the user's concern
        try:
            torch.onnx.export(
                module, tuple(sample.values()), buffer, input_names=names, output_names=output_names,
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, opset_version=OPSET,
                training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                export_params=True, dynamo=False)
        except Exception as exc:  # the exporter raises many types for unsupported code
            raise EdgeftError(f"PyTorch could not export the model to ONNX: {exc}",
                              where=type(module).__name__,
                              hint="make sure the module runs with the sample inputs and uses only traceable operations.") from exc
    return onnx.load_from_string(buffer.getvalue())
