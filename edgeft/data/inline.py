"""Data given in memory through the Python API, written as the data files edgeft reads.

In-memory examples go through the same reader (and the same checks and error messages) as a
file would: (text, label) pairs become JSONL rows, arrays become a ``.npz`` archive. A run keeps
its copy in its folder, so ``deploy`` and ``--resume`` find the data a notebook trained on.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from edgeft.errors import EdgeftError

# A data file or folder; or (text, label) pairs (label: a name, a class number, a list of names for
# multi-label, a number or list of numbers for regression); or arrays named like the model's
# inputs plus ``labels`` (axis 0 = example).
Data = Union[str, os.PathLike, Sequence[tuple[Any, Any]], Mapping[str, Any]]
INLINE_COLUMNS = ("text", "label")  # the JSONL keys (text, label) pairs are written with


def is_inline(data: Any) -> bool:
    """Whether ``data`` is examples in memory rather than the path of a file or folder."""
    return data is not None and not isinstance(data, (str, os.PathLike))


def encode_inline(data: Sequence[tuple[Any, Any]] | Mapping[str, Any], what: str) -> tuple[bytes, str]:
    """The bytes of the data file for in-memory examples, and its suffix (``.jsonl`` or ``.npz``);
    the same examples always give the same bytes (a resumed run recognises its data by them)."""
    if isinstance(data, Mapping):
        buffer = io.BytesIO()
        arrays = {str(name): np.asarray(values) for name, values in data.items()}
        if any(array.dtype == object for array in arrays.values()):
            raise EdgeftError(f"The {what} arrays include one of Python objects.", where=what,
                              hint="give numeric numpy arrays, named like the model's inputs, plus labels.")
        with zipfile.ZipFile(buffer, "w") as archive:  # numpy.savez stamps the time: not repeatable
            for name, array in arrays.items():
                with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        return buffer.getvalue(), ".npz"
    lines = []
    for index, example in enumerate(data):
        if not isinstance(example, (tuple, list)) or len(example) != 2:
            raise EdgeftError(f"Example {index} of the {what} is {example!r:.80}, not a (text, label) pair.",
                              where=f"{what}[{index}]", hint="give a list of (text, label) pairs, or a file path.")
        label = example[1].tolist() if isinstance(example[1], np.ndarray) else \
            example[1].item() if isinstance(example[1], np.generic) else example[1]
        lines.append(json.dumps(dict(zip(INLINE_COLUMNS, (example[0], label))), ensure_ascii=False))
    if not lines:
        raise EdgeftError(f"The {what} holds no examples.", where=what, hint="give at least one (text, label) pair.")
    return ("\n".join(lines) + "\n").encode("utf-8"), ".jsonl"


def write_inline(data: Sequence[tuple[Any, Any]] | Mapping[str, Any], folder: Path, stem: str) -> Path:
    """Write in-memory examples as ``folder/stem.jsonl`` (or ``.npz``) and return the path."""
    content, suffix = encode_inline(data, stem)
    path = Path(folder) / f"{stem}{suffix}"
    path.write_bytes(content)
    return path
