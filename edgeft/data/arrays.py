"""Model inputs stored as numpy arrays (.npz), checked against the manifest's names, dtypes and
shapes: training data of models that take tensors, and what ``edgeft predict`` reads for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeft.errors import EdgeftError


def read_input_arrays(path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The model inputs stored in a .npz, checked like training data; a labels array, if there is
    one, is ignored (``edgeft predict`` on a model that takes tensors)."""
    path = Path(path)
    arrays = load_npz(path)
    arrays.pop("labels", None)  # the name training data gives them (a bundle's manifest has no label input)
    return checked_inputs(path, arrays, manifest, [])


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz archive, by name (never unpickled)."""
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle: object arrays are refused
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise EdgeftError(f"{path} holds one array, not a .npz archive of named arrays.", where=str(path),
                              hint="save it with numpy.savez(path, x=..., labels=...).")
        with loaded as archive:
            arrays = {name: archive[name] for name in archive.files}
    except EdgeftError:
        raise
    except Exception as exc:  # zip, zlib and numpy raise many types for a damaged archive  # noqa: BLE001
        raise EdgeftError(f"{path} is not a readable .npz file: {str(exc)[:200] or type(exc).__name__}.",
                          where=str(path), hint="save it with numpy.savez (numeric arrays only).") from exc
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a zip member that is not a .npy array
            raise EdgeftError(f"{path} holds {name!r}, which is not a numpy array.", where=str(path),
                              hint="save it with numpy.savez (numeric arrays only).")
    return arrays


def checked_inputs(path: Path, arrays: dict[str, np.ndarray], manifest: dict[str, Any],
                    others: list[str]) -> dict[str, np.ndarray]:
    """The model inputs among ``arrays`` (which hold exactly them and ``others``), agreeing on the
    number of examples, cast to the manifest's dtypes and finite."""
    wanted = [spec["name"] for spec in manifest["inputs"]] + others
    absent = [name for name in wanted if name not in arrays]
    extra = [name for name in arrays if name not in wanted]
    if absent or extra:
        problem = f"lacks {', '.join(absent)}" if absent else f"has unexpected arrays {', '.join(extra)}"
        raise EdgeftError(f"{path} {problem}; it holds: {', '.join(arrays) or 'nothing'}.", where=str(path),
                          hint=f"store exactly the arrays {', '.join(wanted)} (axis 0 = example).")
    sizes = {name: (arrays[name].shape[0] if arrays[name].ndim else None) for name in wanted}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        shapes = ", ".join(f"{name} {list(arrays[name].shape)}" for name in wanted)
        raise EdgeftError(f"The arrays in {path} do not agree on the number of examples (axis 0): {shapes}.",
                          where=str(path), hint="give every array one entry per example along axis 0.")
    count = next(iter(sizes.values()))
    if not count:
        raise EdgeftError(f"{path} holds no examples.", where=str(path), hint="store at least one example.")
    inputs = {spec["name"]: checked_array(path, arrays[spec["name"]], spec) for spec in manifest["inputs"]}
    for name, values in inputs.items():
        if values.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(values.reshape(count, -1)).all(axis=1))
            if bad.size:
                raise EdgeftError(f"The input {name!r} at {path}[{bad[0]}] holds NaN or infinite values.",
                                  where=f"{path}[{bad[0]}]", hint="give finite numbers, or remove the example.")
    return inputs


def checked_array(path: Path, values: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """``values`` cast to the spec's dtype after checking rank, fixed dimensions and castability."""
    shape, dtype, name = spec["shape"], np.dtype(spec["dtype"]), spec["name"]
    fixed = all(not isinstance(dim, int) or dim == size for dim, size in zip(shape[1:], values.shape[1:]))
    if values.ndim != len(shape) or not fixed:
        raise EdgeftError(f"The array {name!r} in {path} has shape {list(values.shape)}, but the model takes "
                          f"{shape}.", where=str(path), hint="named dimensions may have any size; numbers must match.")
    if not np.can_cast(values.dtype, dtype, casting="same_kind"):
        raise EdgeftError(f"The array {name!r} in {path} is {values.dtype}, which does not convert to {dtype}.",
                          where=str(path), hint=f"store {name!r} as {dtype}.")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, which the callers refuse
        return values.astype(dtype, copy=False)
