"""A Flower App folder for a real federation: what ``flwr run`` takes.

Flower runs an app from a folder whose ``pyproject.toml`` names the ServerApp and ClientApp
(``[tool.flwr.app.components]``) and holds the run config (``[tool.flwr.app.config]``). edgeft's
apps are installed with edgeft (``edgeft.fleet.server_app:app``, ``edgeft.fleet.client_app:app``),
so the folder holds that file alone: the federation's settings, which ``flwr run --run-config``
can still override. Each SuperNode names its own data and package with ``--node-config``.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib  # the fleet extra needs Python >= 3.11 (Flower does)
from pathlib import Path

import tomli_w

from edgeft import __version__
from edgeft.errors import EdgeftError
from edgeft.fleet.partition import split_data
from edgeft.fleet.settings import FleetSettings
from edgeft.fsutil import atomic_write_text, write_failed

APP_FILE = "pyproject.toml"
APP_NAME = "edgeft-fleet"


def app_config(settings: FleetSettings) -> dict:
    return {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": APP_NAME, "version": "1.0.0", "description": "An edgeft federation (written by edgeft "
                    f"{__version__} fleet app)", "license": "Apache-2.0", "dependencies": []},
        "tool": {"flwr": {"app": {"publisher": "edgeft",
                                  "components": {"serverapp": "edgeft.fleet.server_app:app",
                                                 "clientapp": "edgeft.fleet.client_app:app"},
                                  "config": settings.run_config()}}},
    }


def _ours(target: Path) -> bool:
    try:
        project = tomllib.loads(target.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return project.get("name") == APP_NAME


def write_app(folder: Path, settings: FleetSettings, force: bool = False,
              devices: tuple[Path, int, str, float] | None = None) -> Path:
    """Write ``folder/pyproject.toml`` (nothing else in the folder is touched but ``devices/``);
    one that edgeft did not write is never replaced, one it wrote only with ``force``.

    ``devices``: (data, clients, scheme, alpha) of a simulation run by ``flwr run``: the data is
    split into ``settings.partitions``, one file per virtual device."""
    target = Path(folder) / APP_FILE
    if target.exists():
        if not _ours(target):
            raise EdgeftError(f"{target} exists and is not an edgeft fleet app, so edgeft will not replace it.",
                              where=str(target), hint="choose another folder for the app.")
        if not force:
            raise EdgeftError(f"{target} already holds an edgeft fleet app.", where=str(target),
                              hint="pass --force to rewrite it with these settings, or choose another folder.")
    split = Path(settings.partitions) if devices is not None else None
    if split is not None and split.exists() and not all(p.is_file() and p.suffix == ".jsonl" and
                                                        p.name.startswith("device-") for p in split.iterdir()):
        raise EdgeftError(f"{split} holds files edgeft did not write, so edgeft will not replace it.",
                          where=str(split), hint="choose another folder for the app.")
    with tempfile.TemporaryDirectory(prefix="edgeft-app-") as scratch:
        if devices is not None:  # split (and check) the data before anything is written
            split_data(settings, devices[0], devices[1], devices[2], devices[3], Path(scratch) / "devices")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if split is not None:
                shutil.rmtree(split, ignore_errors=True)  # only device files written by an earlier split
                shutil.copytree(Path(scratch) / "devices", split)
            atomic_write_text(target, tomli_w.dumps(app_config(settings)))
        except OSError as exc:
            raise write_failed(target, exc) from exc
    return target
