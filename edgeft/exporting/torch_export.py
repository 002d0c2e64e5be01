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


def forward_order(module: nn.Module, sample: Mapping[str, torch.Tensor], shared: list[str] | None = None) -> list[str]:
    """Parameter names in the order one forward pass first uses them; unused ones are left out.
    ``shared``, when given, receives the parameters of modules the pass calls more than once
    (ALBERT runs one layer's weights as every layer).

    A module's own parameters count from its call (a forward pre-hook); a parameter a module
    reads from another without calling it (DeBERTa's encoder reads ``rel_embeddings.weight``)
    counts from the first torch operation it enters.
    """
    from torch.overrides import TorchFunctionMode

    seen: list[str] = []
    calls: dict[str, int] = {}
    owners = {id(m): name for name, m in module.named_modules()}
    by_identity = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
    handles = []

    def record(mod: nn.Module, _args: object) -> None:
        prefix = owners[id(mod)]
        calls[prefix] = calls.get(prefix, 0) + 1
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{prefix}.{pname}" if prefix else pname
            if full not in seen:
                seen.append(full)

    class Uses(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            for value in [*args, *(kwargs or {}).values()]:
                name = by_identity.get(id(value)) if isinstance(value, nn.Parameter) else None
                if name is not None and name not in seen:
                    seen.append(name)
            return func(*args, **(kwargs or {}))

    for mod in module.modules():
        if any(True for _ in mod.parameters(recurse=False)):
            handles.append(mod.register_forward_pre_hook(record))
    try:
        with torch.no_grad(), Uses():
            module(*sample.values())
    finally:
        for handle in handles:
            handle.remove()
    canonical = {id(p): n for n, p in module.named_parameters()}
    by_id = dict(module.named_parameters(remove_duplicate=False))
    ordered = []
    for name in seen:
        param = by_id.get(name)
        canon = canonical.get(id(param), name)
        if canon not in ordered:
            ordered.append(canon)
    if shared is not None:
        repeated = {name for name, count in calls.items() if count > 1}
        shared += [n for n in ordered if n.rpartition(".")[0] in repeated]
    return ordered


def set_export_modes(module: nn.Module, trainable: set[str], dropout: bool,
                     sample: Mapping[str, torch.Tensor] | None = None) -> None:
    """Eval mode everywhere except the trainable part, whose dropout stays live if asked.

    A module without parameters (a Dropout) is live when its parent holds trainable parameters
    and, given ``sample``, it first runs after the forward pass has used a trainable parameter:
    Wav2Vec2's encoder applies a dropout before all its layers, which belongs to the frozen
    prefix even when the encoder's last layer trains.
    """
    module.eval()
    module.training = True  # root flag only: the exporter then keeps parameters distinct
    if not dropout:
        return
    downstream = _called_after(module, sample, trainable) if sample is not None else None
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


def _called_after(module: nn.Module, sample: Mapping[str, torch.Tensor], trainable: set[str]) -> set[str]:
    """Names of the modules a forward pass first calls once it has used a trainable parameter."""
    owners = {id(m): name for name, m in module.named_modules()}
    called: set[str] = set()
    after: set[str] = set()
    started = False

    def record(mod: nn.Module, _args: object) -> None:
        nonlocal started
        name = owners[id(mod)]
        own = [f"{name}.{p}" if name else p for p, _ in mod.named_parameters(recurse=False)]
        started = started or any(p in trainable for p in own)
        if name not in called:
            called.add(name)
            if started:
                after.add(name)

    handles = [mod.register_forward_pre_hook(record) for mod in module.modules()]
    try:
        with torch.no_grad():
            module(*sample.values())
    finally:
        for handle in handles:
            handle.remove()
    return after


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
