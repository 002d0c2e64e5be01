"""Label files: one name per line (.txt) or a JSON list of names (.json)."""

from __future__ import annotations

import json
from pathlib import Path

from edgeft.errors import EdgeftError


def read_label_file(path: Path | str) -> list[str]:
    """Label names in order; refuses empty files, blank names and duplicates."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not part of the first label
    except FileNotFoundError as exc:
        raise EdgeftError(f"The label file {path} does not exist.", where=str(path), hint="check the path.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeftError(f"The label file {path} cannot be read: {exc}.", where=str(path),
                          hint="give a UTF-8 text file with one label per line, or a JSON list.") from exc
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EdgeftError(f"The label file is not valid JSON: {exc.msg}.", where=f"{path}:{exc.lineno}",
                              hint="write a JSON list of strings, e.g. [\"yes\", \"no\"].") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise EdgeftError("The JSON label file must hold a list of strings.", where=str(path),
                              hint="write a JSON list of strings, e.g. [\"yes\", \"no\"].")
        names = [n.strip() for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise EdgeftError("The label file holds no labels.", where=str(path), hint="write one label per line.")
    if any(not n for n in names):
        raise EdgeftError("The label file has an empty label name.", where=str(path), hint="remove the empty entry.")
    seen: set[str] = set()
    for index, name in enumerate(names, start=1):
        if name in seen:
            raise EdgeftError(f"The label {name!r} appears twice.", where=f"{path}: entry {index}",
                              hint="give each label once.")
        seen.add(name)
    return names
