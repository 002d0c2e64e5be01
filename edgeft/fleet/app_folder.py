"""A Flower App folder for a real federation: what ``flwr run`` takes.

Flower runs an app from a folder whose ``pyproject.toml`` names the ServerApp and ClientApp
(``[tool.flwr.app.components]``) and holds the run config (``[tool.flwr.app.config]``). edgeft's
apps are installed with edgeft (``edgeft.fleet.server_app:app``, ``edgeft.fleet.client_app:app``),
so the folder holds that file alone: the federation's settings, which ``flwr run --run-config``
can still override. Each SuperNode names its own data and package with ``--node-config``.
"""

from __future__ import annotations

import json
import tomllib  # the fleet extra needs Python >= 3.11 (Flower does)
from pathlib import Path

import tomli_w

from edgeft import __version__
from edgeft.errors import EdgeftError
from edgeft.fleet.partition import split_data
from edgeft.fleet.settings import FleetSettings
from edgeft.fsutil import atomic_write_text, staged_folder, write_failed

APP_FILE = "pyproject.toml"
APP_NAME = "edgeft-fleet"
PARTITION_MARKER = ".edgeft-partition.json"  # in a devices folder edgeft split data into


def app_config(settings: FleetSettings) -> dict:
    return {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": APP_NAME, "version": "1.0.0", "description": "An edgeft federation (written by edgeft "
                    f"{__version__} fleet app)", "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "edgeft",
                                  "components": {"serverapp": "edgeft.fleet.server_app:app",
                                                 "clientapp": "edgeft.fleet.client_app:app"},
                                  # --force rewrote the app; a run folder is replaced only when a
                                  # `flwr run --run-config force=true` says so
                                  "config": {**settings.run_config(), "force": False}}}},
    }


def _ours(target: Path) -> bool:
    try:
        project = tomllib.loads(target.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return project.get("name") == APP_NAME


def devices_folder(folder: Path) -> Path:
    """Where ``--simulate`` splits the data: beside the app, not in it (Flower packs an app
    folder's .json / .jsonl files into the bundle it sends to the SuperLink and every SuperNode)."""
    folder = Path(folder).resolve()
    return folder.with_name(f"{folder.name}-devices")


def _check_devices(dest: Path, force: bool) -> None:
    if not dest.exists():
        return
    if not (dest / PARTITION_MARKER).is_file():
        raise EdgeftError(f"{dest} exists and edgeft did not split data into it, so edgeft will not replace it.",
                          where=str(dest), hint="move it away, or choose another folder for the app.")
    if not force:
        raise EdgeftError(f"{dest} already holds devices' data split by edgeft.", where=str(dest),
                          hint="pass --force to split the data again, or choose another folder for the app.")


def write_app(folder: Path, settings: FleetSettings, force: bool = False,
              devices: tuple[Path, int, str, float] | None = None) -> Path:
    """Write ``folder/pyproject.toml`` (nothing else in the folder is touched); one that edgeft
    did not write is never replaced, one it wrote only with ``force``.

    ``devices``: (data, clients, scheme, alpha) of a simulation run by ``flwr run``: the data is
    split into ``settings.partitions`` (:func:`devices_folder`), one file per virtual device,
    written whole or not at all, and replaced (with ``force``) only when edgeft wrote it."""
    target = Path(folder) / APP_FILE
    if target.exists():
        if not _ours(target):
            raise EdgeftError(f"{target} exists and is not an edgeft fleet app, so edgeft will not replace it.",
                              where=str(target), hint="choose another folder for the app.")
        if not force:
            raise EdgeftError(f"{target} already holds an edgeft fleet app.", where=str(target),
                              hint="pass --force to rewrite it with these settings, or choose another folder.")
    if devices is not None:
        data, clients, scheme, alpha = devices
        with staged_folder(Path(settings.partitions), force, check=_check_devices) as stage:
            parts, counts = split_data(settings, data, clients, scheme, alpha, stage)
            (stage / PARTITION_MARKER).write_text(json.dumps({"scheme": scheme, "alpha": alpha, "data": str(data),
                                                              "sizes": parts.sizes(), "label_counts": counts}) + "\n",
                                                  encoding="utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, tomli_w.dumps(app_config(settings)))
    except OSError as exc:
        raise write_failed(target, exc) from exc
    return target
