"""Labels as the data writes them (a name, a class number, names for multi-label, numbers for
regression) turned into the values the model's loss takes, each mistake reported with its place."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgeft.errors import EdgeftError


class LabelReader:
    """Turns one example's label, as written in the data, into the value the model's loss takes."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        self.task: str = manifest["task"]
        self.names: list[str] = list(manifest["labels"]["names"])
        self.spec: dict[str, Any] = manifest["labels"]["input"]
        self.width = int(manifest["output"]["shape"][-1])
        self.index = {name: i for i, name in enumerate(self.names)}
        # Models exported without label names accept plain class numbers too.
        self.numbered = self.names == [f"LABEL_{i}" for i in range(len(self.names))]
        self.groups: dict[str, int] = {}  # embedding: each group's number, in order of appearance

    def group(self, raw: Any) -> int:
        """An embedding example's group (any name or number: the texts that belong together)."""
        return self.groups.setdefault(str(raw).strip(), len(self.groups))

    def _hint(self) -> str:
        shown = ", ".join(repr(name) for name in self.names[:5])
        more = f", ... ({len(self.names)} in all)" if len(self.names) > 5 else ""
        numbers = f", or a class number 0..{len(self.names) - 1}" if self.numbered else ""
        return f"use one of the model's labels: {shown}{more}{numbers}."

    def class_index(self, raw: str, place: str, what: str = "label") -> int:
        name = raw.strip()
        if name in self.index:
            return self.index[name]
        if self.numbered and re.fullmatch(r"\d+", name) and int(name) < len(self.names):
            return int(name)
        raise EdgeftError(f"{place}: unknown {what} {name!r}.", where=place, hint=self._hint())

    def _names(self, raw: str, place: str) -> np.ndarray:
        hot = np.zeros(len(self.names), dtype=np.float32)
        for part in re.split(r"[|;]", raw):
            if part.strip():
                hot[self.class_index(part, place)] = 1.0
        return hot

    def _floats(self, values: list[Any], place: str) -> np.ndarray:
        if len(values) != self.width:
            raise EdgeftError(f"{place} gives {len(values)} target value(s), but the model predicts {self.width}.",
                              where=place, hint=f"give {self.width} number(s) per example.")
        try:
            numbers = [float(v) for v in values]
        except (ValueError, OverflowError) as exc:  # OverflowError: an integer beyond any float
            raise EdgeftError(f"The target in {place} is not a number: {exc}.", where=place,
                              hint="write numbers such as 0.5 or -3e2.") from exc
        with np.errstate(over="ignore"):
            targets = np.array(numbers, dtype=np.float32)
        if not np.isfinite(targets).all():  # also catches 1e39, finite in Python but not in float32
            raise EdgeftError(f"The target in {place} is NaN or infinite (or too large for float32).", where=place,
                              hint="give finite numbers (at most about 3.4e38), or remove the row.")
        return targets

    def from_text(self, raw: str, place: str) -> Any:
        """A CSV/TSV cell: a label name; names split by | or ; (multi-label); numbers split by spaces or commas."""
        if self.task == "classification":
            return self.class_index(raw, place)
        if self.task == "embedding":
            return self.group(raw)
        if self.task == "multi-label":
            return self._names(raw, place)
        return self._floats(re.split(r"[\s,]+", raw.strip()), place)

    def from_json(self, value: Any, place: str) -> Any:
        """A JSONL value: a name or class number; a list of names (multi-label); a number or list of numbers."""
        if isinstance(value, str):
            return self.from_text(value, place)
        if self.task == "embedding":
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise EdgeftError(f"The group in {place} must be a name or a number, not {value!r}.", where=place,
                                  hint="give each text a group (e.g. an intent, a topic, a note's id): texts of a "
                                       "group should embed close together.")
            return self.group(value)
        if self.task == "regression":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
                raise EdgeftError(f"The target in {place} must be a number or a list of numbers.", where=place,
                                  hint='write e.g. 0.5 or [0.5, 1.0].')
            return self._floats(items, place)
        names = value if self.task == "multi-label" and isinstance(value, list) else [value]
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in names):
            raise EdgeftError(f"The label in {place} must be a label name or class number, not {value!r}.",
                              where=place, hint=self._hint())
        indices = [self.class_index(str(v), place) for v in names]
        if self.task == "classification":
            return indices[0]
        hot = np.zeros(len(self.names), dtype=np.float32)
        hot[indices] = 1.0
        return hot

    def array_shape(self, values: np.ndarray) -> np.ndarray:
        """npz labels in the labels tensor's rank: a plain target vector for a single-output
        regressor gains its output axis."""
        return values[:, None] if self.task == "regression" and self.width == 1 and values.ndim == 1 else values

    def from_array(self, path: str, labels: np.ndarray) -> np.ndarray:
        """npz labels, already of the labels tensor's shape and dtype, checked: class numbers for
        classification, [N, K] 0/1 or finite targets otherwise."""
        if self.task == "embedding":
            return labels
        if self.task == "classification":
            bad = np.flatnonzero((labels < 0) | (labels >= len(self.names)))
            if bad.size:
                raise EdgeftError(f"Label {labels[bad[0]]} at {path}[{bad[0]}] is not a class number "
                                  f"0..{len(self.names) - 1}.", where=f"{path}[{bad[0]}]", hint=self._hint())
            return labels
        bad = np.flatnonzero(~np.isfinite(labels).all(axis=1))
        if bad.size:
            raise EdgeftError(f"The labels at {path}[{bad[0]}] are NaN or infinite.", where=f"{path}[{bad[0]}]",
                              hint="give finite numbers.")
        if self.task == "multi-label":
            bad = np.flatnonzero(((labels < 0) | (labels > 1)).any(axis=1))
            if bad.size:
                raise EdgeftError(f"The multi-label targets at {path}[{bad[0]}] are outside 0..1.",
                                  where=f"{path}[{bad[0]}]", hint="give 1 for each label that applies, else 0.")
        return labels

    def stack(self, values: list[Any]) -> np.ndarray:
        """The labels tensor of the examples read: int64 [N], or float32 [N, K]."""
        if self.task in ("classification", "embedding"):
            return np.array(values, dtype=np.int64)
        return np.stack(values).astype(np.float32, copy=False)
