"""A PyTorch ``nn.Module`` built by a user's factory: ``package.module:factory`` or ``file.py:factory``.

The sample-input spec ``NAME:DTYPE:DIMS`` (for example ``x:float32:batch,16``) names each
input; named dimensions become dynamic axes and get a small size in the sample tensor.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeft.errors import EdgeftError
from edgeft.exporting.source import InputSpec, LoadedModel, sample_array
from edgeft.exporting.torch_export import PositionalModel


def parse_input_spec(text: str) -> InputSpec:
    """``NAME:DTYPE:DIMS`` -> InputSpec; DIMS are comma-separated ints or names."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise EdgeftError(f"--input {text!r} is not NAME:DTYPE:DIMS.", where="--input",
                          hint="write for example --input x:float32:batch,16 (named dims are dynamic).")
    name, dtype, dims = parts
    try:
        np_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise EdgeftError(f"--input {text!r}: unknown dtype {dtype!r}.", where="--input",
                          hint="use float32, int64, int32 or bool.") from exc
    shape: list[int | str] = []
    for dim in dims.split(","):
        dim = dim.strip()
        if dim.isdigit() and int(dim) > 0:
            shape.append(int(dim))
        elif dim.isidentifier():
            shape.append(dim)
        else:
            raise EdgeftError(f"--input {text!r}: dimension {dim!r} is neither a positive int nor a name.",
                              where="--input", hint="write dims like batch,3,32,32.")
    return InputSpec(name, np_dtype.name, shape)


def _import_factory(ref: str):
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise EdgeftError(f"{ref!r} is not module:factory.", where=ref,
                          hint="write package.module:factory or path/to/file.py:factory.")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise EdgeftError(f"{target} does not exist.", where=target, hint="check the path.")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(target)
    except EdgeftError:
        raise
    except Exception as exc:
        raise EdgeftError(f"Could not import {target}: {exc}", where=ref,
                          hint="run edgeft from the folder that holds the module, or install its package.") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EdgeftError(f"{target} has no callable {attr!r}.", where=ref,
                          hint="name a function (or class) that returns an nn.Module.")
    return factory


def load_torch(ref: str, input_specs: list[str], label_names: list[str], num_labels: int | None,
               seed: int) -> LoadedModel:
    """Call the factory and run the sample once to learn the output size."""
    if not input_specs:
        raise EdgeftError(f"{ref} is a PyTorch factory, which needs the shape of its inputs.", where="--input",
                          hint="add --input NAME:DTYPE:DIMS for each forward argument, e.g. --input x:float32:batch,16.")
    specs = [parse_input_spec(s) for s in input_specs]
    torch.manual_seed(seed)
    try:
        built = _import_factory(ref)()
    except EdgeftError:
        raise
    except Exception as exc:
        raise EdgeftError(f"The factory {ref} failed: {exc}", where=ref, hint="fix the factory so it returns a model.") from exc
    if not isinstance(built, nn.Module):
        raise EdgeftError(f"{ref} returned {type(built).__name__}, not a torch.nn.Module.", where=ref,
                          hint="return the model object from the factory.")
    module = PositionalModel(built, [s.name for s in specs])
    sample = {s.name: torch.from_numpy(sample_array(s, seed)) for s in specs}
    try:
        with torch.no_grad():
            out = module(*sample.values())
    except Exception as exc:
        raise EdgeftError(f"The model failed on the sample inputs: {exc}", where=ref,
                          hint="check the --input names, dtypes and dims against the forward() signature.") from exc
    width = int(out.shape[-1]) if out.dim() > 1 else 1
    count = len(label_names) or num_labels or width
    if count != width:
        raise EdgeftError(f"The model gives {width} outputs per example but {count} labels were given.",
                          where=ref, hint="give as many labels as the model has outputs.")
    names = label_names or [f"LABEL_{i}" for i in range(count)]
    return LoadedModel(inputs=specs, output="logits", num_outputs=count,
                       source={"kind": "torch", "factory": ref}, module=module, sample=sample, label_names=names)
