"""The ``edgeft`` command line: a Click group whose commands are imported only when run.

Lazy loading keeps ``edgeft --help`` instant and keeps torch out of device-side commands. User
mistakes (``EdgeftError``) are printed as one clear message with a non-zero exit, never as a
traceback.
"""

from __future__ import annotations

import errno
import importlib
import sys

import click

from edgeft import __version__
from edgeft.errors import EdgeftError

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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user mistakes into one message and exit code 1."""
    try:
        cli.main(args=argv, prog_name="edgeft", standalone_mode=False)
    except EdgeftError as exc:
        _fail(exc)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; nothing half-written was kept", err=True)
        sys.exit(130)
    except Exception as exc:
        from edgeft.fsutil import disk_error

        full = disk_error(exc)  # a library writing a temporary file on a full disk
        if full is None:
            raise  # a bug in edgeft: keep the traceback for the bug report
        import os
        import tempfile

        reason = "the disk is full" if full.errno == errno.ENOSPC else full.strerror or str(full)
        temp = tempfile.tempdir or os.environ.get("TMPDIR") or "/tmp"  # not gettempdir(): it may fail right now
        _fail(EdgeftError(f"A file could not be written: {reason}.",
                          where=str(full.filename) if full.filename else
                          f"the output folder or the temporary folder ({temp})",
                          hint="free some space (or point TMPDIR to a disk with room) and run the command again; "
                               "nothing half-written was kept."))


def _fail(exc: EdgeftError) -> None:
    """Print a user-facing error as one message (what, where, what to do) and exit with status 1."""
    click.secho(f"error: {exc.what}", fg="red", err=True)
    if exc.where:
        click.echo(f"  where: {exc.where}", err=True)
    if exc.hint:
        click.echo(f"  what to do: {exc.hint}", err=True)
    sys.exit(1)
