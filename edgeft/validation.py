"""The files edgeft reads checked by their pydantic models, each problem reported in edgeft's
style: one :class:`EdgeftError` naming the file, the dotted field, what was found and what is
allowed. TOML files people write (device profiles, ``edgeft.toml``) also get the close match of a
misspelling and a line to write; JSON files edgeft writes (manifest, run record, checkpoint state)
get one fix, their own (:func:`json_style`).

The models are the schema. Types, choices (``Literal``), bounds (``Field(ge=..., le=...)``) and
the example a message suggests (``Field(examples=[value])``, written out as TOML) are declared
on the fields; rules across fields are validators that raise :func:`rule`. This module only puts
pydantic's errors into words, so a new field is one annotated line in its model.

Tables (:class:`Table`) are strict: TOML's integers, floats, booleans and strings are told apart
(``cores = true`` or ``threads = "4"`` is an error, not a conversion), and an unknown key is an
error. Arrays of strings (:data:`Strings`) are kept as tuples, so the models are hashable.
"""

from __future__ import annotations

import difflib
import json
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from edgeft.errors import EdgeftError

M = TypeVar("M", bound=BaseModel)
RULE = "edgeft_rule"  # the error type of rule()


class Table(BaseModel):
    """A TOML table: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def rule(what: str, hint: str, at: str = "") -> PydanticCustomError:
    """The error a validator raises for a rule of its own. ``{field}`` in ``what`` and ``hint``
    becomes the dotted field; ``at`` names a field below the validated one (a model validator's
    ``"threads"``, ``"op_types[0]"``)."""
    return PydanticCustomError(RULE, "{what}", {"what": what, "hint": hint, "at": at})


def distinct(values: tuple[str, ...]) -> tuple[str, ...]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise rule(f"{{field}} lists {show(repeated[0])} more than once.", "list each entry once.")
    return values


def _filled(value: str) -> str:
    if not value.strip():
        raise rule("{field} is empty.", "write a non-empty string.")
    return value


# an array of strings, each listed once (TOML gives lists: the tuple itself is not strict)
Strings = Annotated[tuple[str, ...], Field(strict=False), AfterValidator(distinct)]


def strings(choices: tuple[str, ...]) -> Any:
    """:data:`Strings` whose elements are ``choices``."""
    return Annotated[tuple[typing.Literal[choices], ...], Field(strict=False), AfterValidator(distinct)]


Text = Annotated[str, AfterValidator(_filled)]  # a string that is not blank


def check(model: type[M], data: Any, where: Callable[[str], str], prefix: tuple[str, ...] = (),
          table: str = "", style: Style | None = None) -> M:
    """``data`` validated into ``model``; the first problem raised as an EdgeftError whose
    ``where`` is ``where(dotted field)``. ``prefix``: the dotted position of ``model`` in its file;
    ``table``: how the file writes ``model``'s own table (``[[build]]``), if it is not the top level;
    ``style``: :data:`TOML` (the default) or a :func:`json_style`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # unknown keys first (a misspelt table also leaves the real one missing), the outermost first
        errors = sorted(exc.errors(include_url=False), key=lambda e: (e["type"] != "extra_forbidden", len(e["loc"])))
        raise _explain(model, errors[0], where, prefix, table, style or TOML) from None


def in_file(path: Any) -> Callable[[str], str]:
    """``where`` for :func:`check`: the file, then the field."""
    return lambda field: f"{path}, field {field}"


def toml_type(value: Any) -> str:
    """TOML's name for the type of a parsed value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return "date/time" if type(value).__module__ == "datetime" else type(value).__name__


def show(value: Any) -> str:
    """A value as it is written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return number(value) if isinstance(value, int) else repr(value)


def number(value: float | None) -> str:
    """A number for a message (integers far beyond float range are shortened)."""
    if value is None:
        return "?"
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 24 else f"{text[:6]}...({len(text.lstrip('-'))} digits)"
    if not math.isfinite(value):
        return repr(value)
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Style:
    """How a file's problems are worded: TOML files people write (types as TOML names them, a line
    to write as the fix) or JSON files edgeft writes (one fix: re-create the folder)."""

    toml: bool
    subject: Callable[[str], str]  # the dotted field as a message's subject
    type_name: Callable[[Any], str]
    show: Callable[[Any], str]
    fix: str = ""  # the hint of every problem, if the file is not to be edited by hand


def json_type(value: Any) -> str:
    """JSON's name for the type of a parsed value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def show_json(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


TOML = Style(True, lambda dotted: dotted, toml_type, show)


def json_style(noun: str, fix: str) -> Style:
    """The style of a JSON file edgeft writes: problems read "The ``noun`` field X ...", and every
    one has ``fix`` as its hint (such a file is not edited by hand)."""
    return Style(False, lambda dotted: f"The {noun} field {dotted}", json_type, show_json, fix)


# --- the wording of pydantic's errors --------------------------------------------------------

_KIND = {int: "an integer", float: "a number", bool: "a boolean (true or false)", str: "a string", list: "an array",
         dict: "a table"}
_JSON_KIND = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list",
              dict: "an object"}
_TYPE_ERRORS = {"int_type", "int_from_float", "float_type", "bool_type", "string_type", "tuple_type", "list_type",
                "literal_error"}


def _is_union(annotation: Any) -> bool:
    """``Optional[X]``, ``Union[...]`` or ``X | Y``."""
    return typing.get_origin(annotation) is typing.Union or type(annotation).__name__ == "UnionType"


def _strip(annotation: Any) -> Any:
    """The type under Optional and Annotated."""
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif _is_union(annotation):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0]
        else:
            return annotation


def _metadata(annotation: Any) -> list[Any]:
    """The constraint objects (``Ge``, ``Le``, ...) of ``Annotated`` types anywhere in ``annotation``."""
    found: list[Any] = []
    if typing.get_origin(annotation) is Annotated:
        inner, *extras = typing.get_args(annotation)
        for extra in extras:
            found.extend(getattr(extra, "metadata", None) or [extra])
        return found + _metadata(inner)
    if _is_union(annotation):
        for option in typing.get_args(annotation):
            found.extend(_metadata(option))
    return found


def _is_table(annotation: Any) -> bool:
    # typing.get_origin: on Python 3.9 and 3.10 ``tuple[str, ...]`` is an instance of type, and
    # issubclass raises on it
    return isinstance(annotation, type) and typing.get_origin(annotation) is None and issubclass(annotation, BaseModel)


class _Spot:
    """Where an error is: the dotted field, its annotation and its FieldInfo."""

    def __init__(self, model: type[BaseModel], loc: tuple[Any, ...], prefix: tuple[str, ...]) -> None:
        self.info, self.annotation = None, model
        self.item = False  # an element of an array
        parts = list(prefix)
        for part in loc:
            if isinstance(part, int):
                parts[-1] = f"{parts[-1]}[{part}]"
                args = typing.get_args(self.annotation)
                self.annotation, self.item = (_strip(args[0]) if args else Any), True
                continue
            parts.append(str(part))
            self.item = False  # a field of an object inside an array
            if _is_table(self.annotation) and part in self.annotation.model_fields:
                self.info = self.annotation.model_fields[part]
                self.annotation = _strip(self.info.annotation)
            else:
                self.annotation, self.info = Any, None
        self.dotted = ".".join(parts)
        self.array = self.dotted.rpartition("[")[0] if self.item else self.dotted

    def bound(self, name: str) -> float | None:
        """The field's ``ge`` or ``le``, also from under an Optional."""
        for meta in [*self.info.metadata, *_metadata(self.info.annotation)] if self.info else ():
            if getattr(meta, name, None) is not None:
                return getattr(meta, name)
        return None

    def choices(self) -> tuple[Any, ...]:
        """The values allowed here, or in each element of an array."""
        if typing.get_origin(self.annotation) is typing.Literal:
            return typing.get_args(self.annotation)
        return typing.get_args(_element(self.info)) if typing.get_origin(self.annotation) is tuple else ()

    def example(self) -> str:
        """A line to write, e.g. ``cores = 4``."""
        key = self.array.rpartition(".")[2]
        if self.info is not None and self.info.examples:
            return f"{key} = {show(self.info.examples[0])}"
        choices = self.choices()
        if typing.get_origin(self.annotation) is tuple:
            return f"{key} = [{show(choices[0])}]" if choices else f'{key} = ["..."]'
        if choices:
            return f"{key} = {show(choices[0])}"
        return f"{key} = " + {int: "1", float: "1.0", bool: "true"}.get(self.annotation, '"..."')

    def kind(self, toml: bool) -> str:
        origin = typing.get_origin(self.annotation)
        if origin is tuple:
            return "an array of strings"
        if origin is typing.Literal:
            return "a string" if all(isinstance(c, str) for c in self.choices()) else "one of the values listed"
        if _is_table(self.annotation):
            return "a table" if toml else "an object"
        return (_KIND if toml else _JSON_KIND).get(origin or self.annotation, "a value of another type")


def _element(info: Any) -> Any:
    """The Literal of an array's elements, if it has one."""
    if info is None:
        return None
    args = typing.get_args(_strip(info.annotation))
    return _strip(args[0]) if args else None


def _explain(model: type[BaseModel], error: Mapping[str, Any], where: Callable[[str], str],
             prefix: tuple[str, ...], top: str, style: Style) -> EdgeftError:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    spot = _Spot(model, tuple(error["loc"]), prefix)
    if kind == RULE:
        dotted = spot.dotted + (("." if not ctx["at"].startswith("[") else "") + ctx["at"] if ctx["at"] else "")
        dotted = dotted.lstrip(".")
        what = ctx["what"].replace("{field}", dotted)
        if not style.toml and what.startswith(dotted):
            what = style.subject(dotted) + what[len(dotted):]
        return EdgeftError(what, where=where(dotted), hint=style.fix or ctx["hint"].replace("{field}", dotted))
    dotted, subject = spot.dotted, style.subject(spot.dotted)
    shown = style.show(value)
    found = style.type_name(value) if value is None else f"{style.type_name(value)} {shown}"  # not "null null"

    def fail(what: str, hint: str) -> EdgeftError:
        return EdgeftError(what, where=where(dotted), hint=style.fix or hint)

    if kind == "extra_forbidden":
        if not style.toml:
            return fail(f"{subject} is not a field edgeft knows.", "")
        parent = _Spot(model, tuple(error["loc"][:-1]), ()).annotation  # the table the unknown key is in
        allowed = [name for name, info in parent.model_fields.items() if not info.exclude] if _is_table(parent) else []
        close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1, cutoff=0.6)
        noun = "table" if isinstance(value, Mapping) else "field"
        return fail(f"Unknown {noun} {dotted}" + (f"; did you mean {close[0]}?" if close else "."),
                    f"did you mean {close[0]}?" if close else f"allowed here: {', '.join(allowed)}.")
    if kind == "missing":
        if not style.toml:
            return fail(f"{subject} is missing.", "")
        if _is_table(spot.annotation):
            fields = [name for name, info in spot.annotation.model_fields.items() if info.is_required()]
            return fail(f"The table [{dotted}] is missing.", f"add a [{dotted}] table with: {', '.join(fields)}.")
        table, _, _ = dotted.rpartition(".")
        choices = spot.choices()
        place = f" to the [{table}] table" if table else f" to the {top} table" if top else " at the top of the file"
        return fail(f"The required field {dotted} is missing.", f"add {spot.example()}{place}"
                    + (f" (one of: {', '.join(choices)})." if choices else "."))
    if kind in ("model_type", "model_attributes_type", "dict_type") and style.toml:
        return fail(f"{dotted} must be a table ([{dotted}]), found {found}.",
                    f"write [{dotted}] on its own line followed by its fields.")
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool) or kind == "finite_number":
        return fail(f"{subject} must be a finite number, found {number(value)}.", "write a plain number.")
    if kind in _TYPE_ERRORS | {"model_type", "model_attributes_type", "dict_type"} \
            and not (kind == "literal_error" and type(value) in {type(c) for c in spot.choices()}):
        if spot.item and spot.kind(style.toml) == "a string":
            return fail(f"{style.subject(spot.array)} must be an array of strings, item {dotted.rpartition('[')[2][:-1]} "
                        f"is {found}.", f"write e.g. {spot.example()}")
        return fail(f"{subject} must be {spot.kind(style.toml)}, found {found}.",
                    f"write e.g. {spot.example()}")
    if kind == "literal_error":
        choices = [str(c) for c in spot.choices()]
        close = difflib.get_close_matches(str(value), choices, n=1)
        guess = f"did you mean {style.show(close[0])}? " if close else ""
        return fail(f"{subject} is {shown}, which is not allowed; allowed: {', '.join(choices)}.",
                    f"{guess}use one of: {', '.join(choices)}.")
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = spot.bound("ge"), spot.bound("le")
        bounds = (f"between {number(low)} and {number(high)}" if low is not None and high is not None
                  else f"at least {number(low)}" if low is not None else f"at most {number(high)}")
        return fail(f"{subject} is {number(value)}, out of range: it must be {bounds}.",
                    f"use a number {bounds}." if low is not None and high is not None else f"use a number of {bounds}.")
    if kind == "string_pattern_mismatch":
        return fail(f"{subject} is {shown}, which is not of the form it must have.", "write it as edgeft does.")
    if kind in ("too_short", "string_too_short"):
        return fail(f"{subject} is empty.", "write at least one entry.")
    return fail(f"{subject}: {error['msg']}.", "fix the value.")
