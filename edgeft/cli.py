"""The ``edgeft`` command line: a Click group whose commands are imported only when run.

Lazy loading keeps ``edgeft --help`` instant and keeps torch out of device-side commands. User
mistakes (``EdgeftError``) are printed as one clear message with a non-zero exit, never as a
traceback.
"""

from __future__ import annotations

import errno
import importlib
import json
import sys

import click

from edgeft import __version__
from edgeft.errors import EdgeftError, Interrupted

# command name -> (module in edgeft.commands, one-line help shown by `edgeft --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export", "Turn a pretrained model into training artifacts (or a device package)."),
    "package": ("package", "Make a device package from artifacts: quantized frozen prefix, training graphs."),
    "inspect": ("inspect", "Show an artifact folder's manifest and verify every file's hash."),
    "train": ("train", "Fine-tune the trainable layers on your data, on this CPU."),
    "evaluate": ("evaluate", "Metrics of artifacts or a trained run on labelled data."),
    "deploy": ("deploy", "Quantize a trained run for a device profile and write a checked bundle."),
    "predict": ("predict", "Labels and scores from a bundle (onnxruntime only)."),
    "bench": ("bench", "Latency, throughput and peak memory of a bundle."),
    "build": ("build", "Build the artifacts and bundles declared in edgeft.toml (skips unchanged ones)."),
    "verify": ("verify", "Check a downloaded artifact folder or bundle: hashes, format, loads here."),
    "devices": ("devices", "List the device profiles, or show one."),
    "fleet": ("fleet", "Federated fine-tuning on Flower: simulate a fleet, or write a Flower App for real devices."),
}


class LazyGroup(click.Group):
    """A group that imports a command's module the first time the command is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"edgeft.commands.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgeft")
def cli() -> None:
    """edgeft: fine-tune pretrained models on edge devices, then deploy them.

    \b
    Typical flow:
      edgeft export --labels labels.txt --device raspberry-pi-5   # host: model -> device package
      edgeft inspect artifacts/minilm-raspberry-pi-5              # check what was built
      edgeft train artifacts/minilm-raspberry-pi-5 train.csv     # device: fine-tune on your data
      edgeft evaluate artifacts/runs/minilm-raspberry-pi-5 test.csv
      edgeft deploy artifacts/runs/minilm-raspberry-pi-5          # device: quantized bundle
    """


def _prepare_process() -> None:
    """What the CLI, which owns its process, sets up that the library leaves to its callers: no
    model hub (models come from local folders), no transformers advisories, no Flower usage
    telemetry (nothing leaves the machine that the user did not send), and an
    onnxruntime-training import that does not load torch (see edgeft.ortimport)."""
    import os

    from edgeft.ortimport import skip_ortmodule

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # edgeft fleet: Flower reports usage unless told not to
    skip_ortmodule()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user mistakes into one message (what, where, what to do).

    Exit status: 0 done, 1 a failure the user can fix (EdgeftError), 2 a usage error (Click's
    convention: an unknown option, a bad value), 130 interrupted. With ``--json`` the error is
    also printed on stdout as a JSON object, so a script reading stdout always gets JSON.
    """
    _prepare_process()
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    try:
        cli.main(args=args, prog_name="edgeft", standalone_mode=False)
    except EdgeftError as exc:
        _fail(exc, as_json)
    except (click.exceptions.Abort, KeyboardInterrupt):  # Click turns Ctrl-C into Abort
        _fail(Interrupted("Interrupted.", hint="nothing half-written was kept; run the command again."), as_json)
    except click.ClickException as exc:
        if as_json:
            command = next((a for a in args if a in COMMANDS), None)
            _print_json_error(exc.format_message(), " ".join(["edgeft", *([command] if command else [])]),
                              f"see edgeft {command + ' ' if command else ''}--help.", exc.exit_code)
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        from edgeft.fsutil import disk_error, path_failed

        full = disk_error(exc)  # a library writing a temporary file on a full disk
        if full is not None:
            import os
            import tempfile

            reason = "the disk is full" if full.errno == errno.ENOSPC else full.strerror or str(full)
            temp = tempfile.tempdir or os.environ.get("TMPDIR") or "/tmp"  # not gettempdir(): it may fail right now
            _fail(EdgeftError(f"A file could not be written: {reason}.",
                              where=str(full.filename) if full.filename else
                              f"the output folder or the temporary folder ({temp})",
                              hint="free some space (or point TMPDIR to a disk with room) and run the command "
                                   "again; nothing half-written was kept."), as_json)
        if isinstance(exc, OSError) and exc.filename:  # a path the user gave: read-only, not permitted, vanished
            _fail(path_failed(exc), as_json)
        raise  # a bug in edgeft: keep the traceback for the bug report


def _print_json_error(what: str, where: str | None, hint: str | None, code: int) -> None:
    click.echo(json.dumps({"error": {"what": what, "where": where, "hint": hint}, "exit_code": code}, indent=2))


def _fail(exc: EdgeftError, as_json: bool = False) -> None:
    """Print a user-facing error as one message (what, where, what to do) on stderr, also as JSON
    on stdout under --json, and exit with its status (1, or 130 when interrupted)."""
    if as_json:
        _print_json_error(exc.what, exc.where, exc.hint, exc.exit_code)
    click.secho(f"error: {exc.what}", fg="red", err=True)
    if exc.where:
        click.echo(f"  where: {exc.where}", err=True)
    if exc.hint:
        click.echo(f"  what to do: {exc.hint}", err=True)
    sys.exit(exc.exit_code)
