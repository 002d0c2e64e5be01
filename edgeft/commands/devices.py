"""``edgeft devices``: list the device profiles, or show one in detail (device side)."""

from __future__ import annotations

import json

import click


@click.command(name="devices")
@click.argument("name_or_path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the profile(s) as JSON on stdout (a list, or one object).")
def command(name_or_path: str | None, as_json: bool) -> None:
    """List the device profiles, or show NAME_OR_PATH (a built-in name or your own .toml file).

    Every profile shown is validated first: a mistake in a profile is reported with the file,
    the field, what was found and what is allowed. The built-in profiles live in the devices/
    folder (EDGEFT_DEVICES points to another one).

    \b
    Examples:
      edgeft devices
      edgeft devices raspberry-pi-5
      edgeft devices ./my-board.toml          # check your own profile
      edgeft devices --json | jq '.[].name'
    """
    from edgeft.devices import list_profiles, load_profile

    if name_or_path is None:
        profiles = list_profiles()
        if as_json:
            click.echo(json.dumps([p.as_dict() for p in profiles], indent=2))
        else:
            _print_table(profiles)
        return
    profile = load_profile(name_or_path)
    if as_json:
        click.echo(json.dumps(profile.as_dict(), indent=2))
    else:
        _print_profile(profile)


def _memory(mb: int) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 and mb % 256 == 0 else f"{mb} MB"


def _print_table(profiles: list) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from edgeft.devices import profiles_dir
    from edgeft.report import stderr, stdout

    # Borderless with two spaces between columns, so all columns fit in 80: only ISA and recipe
    # wrap (at spaces; their longest words, avx512vnni and reduce-range, fit min_width).
    table = Table(title=f"Device profiles in {escape(str(profiles_dir()))}", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("arch", no_wrap=True)
    table.add_column("ISA", min_width=10, ratio=2)
    table.add_column("threads", justify="right", no_wrap=True)
    table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("recipe", min_width=12, ratio=3)
    table.add_column("drop", justify="right", no_wrap=True)
    for p in profiles:
        hw = p.hardware
        table.add_row(p.name, hw.arch, escape(" ".join(hw.isa)) or "-", f"{hw.threads}/{hw.cores}",
                      _memory(hw.memory_mb), escape(p.quantization.summary()),
                      f"{p.targets.max_accuracy_drop:g} pt")
    stdout.print(table)
    if not profiles:
        stderr.print("[yellow]no profiles found[/]")
    else:
        stdout.print("threads: used/cores; drop: the accuracy loss deploy accepts, in percentage points.\n"
                     "Details: [bold]edgeft devices NAME[/]; deploy: [bold]edgeft deploy RUN --device NAME[/]")


def _print_profile(profile) -> None:
    from rich.markup import escape
    from rich.table import Table

    from edgeft.report import stdout

    hw, q, rt, tg = profile.hardware, profile.quantization, profile.runtime, profile.targets
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()

    def section(title: str) -> None:
        grid.add_row(f"[cyan]{title}[/]", "")

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    rows: list[tuple[str, str]] = [("name", profile.name), ("description", profile.description),
                                   ("file", str(profile.path))]
    for key, value in rows:
        grid.add_row(key, escape(value))
    section("hardware")
    for key, value in [
        ("arch", hw.arch), ("ISA", ", ".join(hw.isa) or "-"), ("cores", str(hw.cores)),
        ("threads", str(hw.threads)), ("memory budget", _memory(hw.memory_mb)),
        ("storage budget", _memory(hw.storage_mb)),
    ]:
        grid.add_row(f"  {key}", escape(value))
    section("quantization")
    recipe = [("recipe", q.summary()), ("mode", q.mode)]
    if q.mode in ("dynamic", "static", "weight-only"):
        recipe.append(("weight type", q.weight_type))
    if q.mode in ("dynamic", "static"):
        recipe += [("format", q.format), ("per-channel", yes(q.per_channel)), ("reduce-range", yes(q.reduce_range))]
    if q.mode == "static":
        recipe += [("activation type", q.activation_type), ("calibration examples", str(q.calibration_examples))]
    if q.mode not in ("none", "fp16"):
        recipe.append(("embeddings quantized", yes(q.quantize_embeddings)))
    if q.mode in ("dynamic", "static"):
        recipe.append(("operators", ", ".join(q.op_types) or "quantizer default"))
    if q.mode != "none":
        recipe.append(("kept in fp32", ", ".join(q.exclude_nodes) or "-"))
    for key, value in recipe:
        grid.add_row(f"  {key}", escape(value))
    section("runtime")
    grid.add_row("  graph optimization", rt.graph_optimization)
    grid.add_row("  transformer fusions", yes(rt.fuse_transformer))
    section("targets")
    grid.add_row("  max accuracy drop", f"{tg.max_accuracy_drop:g} percentage point"
                 + ("" if tg.max_accuracy_drop == 1 else "s"))
    grid.add_row("  latency p50", f"{tg.latency_ms_p50:g} ms (batch 1)" if tg.latency_ms_p50 else "no target")
    grid.add_row("  max model size", f"{tg.max_model_mb:g} MB" if tg.max_model_mb else "no target")
    stdout.print(grid)
    stdout.print("[green]profile is valid[/]")
