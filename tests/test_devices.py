"""Device profiles: every shipped profile is valid, every schema error is one clear message, and
``edgeft devices`` lists and shows profiles without loading any host-side package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HEAVY, cli_calls, run_device_side
from edgeft.devices import (FORMAT_VERSION, DeviceProfile, list_profiles, load_profile, profile_from_dict,
                            profiles_dir)
from edgeft.errors import EdgeftError

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {"x86-64-avx2", "x86-64-avx512-vnni", "raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano-cpu",
            "apple-m-series", "stm32mp25", "generic-arm64"}

VALID = """\
format_version = 1
name = "my-board"
description = "My board: 4x Cortex-A55 @ 1.8 GHz, 2 GB"

[hardware]
arch = "arm64"
isa = ["neon", "dotprod", "fp16"]
cores = 4
threads = 4
memory_mb = 1024
storage_mb = 4096

[quantization]
mode = "dynamic"
format = "qoperator"
weight_type = "int8"
activation_type = "uint8"
per_channel = false
reduce_range = false
quantize_embeddings = true
op_types = ["MatMul", "Gemm", "Attention", "Gather"]
exclude_nodes = []
calibration_examples = 128

[runtime]
graph_optimization = "all"
fuse_transformer = true

[targets]
max_accuracy_drop = 1.0
latency_ms_p50 = 20.0
max_model_mb = 64
"""


def cli(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeft", "devices", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, COLUMNS=str(columns)))


def write(folder: Path, text: str, name: str = "my-board.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped profiles -------------------------------------------------------------------


def test_profiles_dir_is_the_repository_devices_folder(monkeypatch):
    monkeypatch.delenv("EDGEFT_DEVICES", raising=False)
    assert profiles_dir() == REPO / "devices"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """edgeft built as a wheel, as pip builds it for an install."""
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dist), str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "deprecated" not in built.stderr, built.stderr[-2000:]  # e.g. project.license as a TOML table
    (found,) = dist.glob("edgeft-*.whl")
    return found


def test_wheel_ships_the_profiles_where_an_installed_edgeft_finds_them(monkeypatch, tmp_path, wheel):
    """A wheel carries devices/*.toml as data files for <prefix>/share/edgeft/devices; an edgeft
    installed from it (no repository next to the package) reads its profiles there."""
    import zipfile

    import edgeft.devices as devices

    prefix = tmp_path / "prefix"
    with zipfile.ZipFile(wheel) as archive:
        shipped = {}
        for name in archive.namelist():
            parts = name.split("/")
            if parts[0].endswith(".data") and parts[1] == "data" and parts[2:4] == ["share", "edgeft"]:
                target = prefix.joinpath(*parts[2:])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(name))
                shipped[target.name] = target.read_bytes()
    assert shipped == {p.name: p.read_bytes() for p in (REPO / "devices").glob("*.toml")}
    monkeypatch.delenv("EDGEFT_DEVICES", raising=False)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    monkeypatch.setattr(devices, "__file__", str(tmp_path / "site-packages" / "edgeft" / "devices.py"))
    assert profiles_dir() == prefix / "share" / "edgeft" / "devices"
    assert {p.name for p in list_profiles()} == EXPECTED
    assert load_profile("raspberry-pi-5").path.parent == prefix / "share" / "edgeft" / "devices"


def test_a_user_install_finds_its_profiles(wheel, tmp_path):
    """``pip install --user`` puts the data files under the user base, not sys.prefix: an edgeft
    installed that way (by the interpreter the test venv was made from) still finds them."""
    import sysconfig

    base = Path(getattr(sys, "_base_executable", sys.executable))
    user = tmp_path / "user"
    env = {**os.environ, "PYTHONUSERBASE": str(user), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("EDGEFT_DEVICES", None)
    env.pop("PYTHONNOUSERSITE", None)
    installed = subprocess.run([str(base), "-m", "pip", "install", "-q", "--user", "--no-deps", "--no-index",
                                str(wheel)], capture_output=True, text=True, timeout=300, env=env)
    if installed.returncode != 0 and "externally-managed" in installed.stderr:
        pytest.skip("the base interpreter refuses user installs (PEP 668)")
    assert installed.returncode == 0, installed.stderr[-2000:]
    # the venv's packages for numpy and onnxruntime, on PYTHONPATH (whose .pth files, and so the
    # venv's editable edgeft, are not processed): edgeft itself comes from the user site
    probe = subprocess.run([str(base), "-c", "import edgeft, edgeft.devices as d; print(edgeft.__file__); "
                            "print(d.profiles_dir()); print(len(d.list_profiles()))"], capture_output=True,
                           text=True, timeout=120, cwd=str(tmp_path),
                           env={**env, "PYTHONPATH": sysconfig.get_paths()["purelib"]})
    assert probe.returncode == 0, probe.stderr[-2000:]
    package, folder, count = probe.stdout.split()
    assert Path(package).is_relative_to(user)
    assert Path(folder) == (user / "share" / "edgeft" / "devices").resolve()
    assert int(count) == len(EXPECTED)


def test_every_shipped_profile_validates_and_round_trips():
    profiles = list_profiles()
    assert {p.name for p in profiles} >= EXPECTED
    assert [p.name for p in profiles] == sorted(p.name for p in profiles)
    for profile in profiles:
        assert profile.path.parent == REPO / "devices"
        assert profile.name == profile.path.stem
        data = profile.as_dict()
        assert json.loads(json.dumps(data)) == data  # JSON-able
        assert data["path"] == str(profile.path)
        assert profile_from_dict(data, profile.path, check_name=True) == profile
        # the same structure and values as the TOML file itself
        raw = tomllib.loads(profile.path.read_text(encoding="utf-8"))
        shown = {k: v for k, v in data.items() if k != "path"}
        shown["targets"] = {k: v for k, v in shown["targets"].items() if v is not None}
        assert shown == raw, profile.name
        assert load_profile(profile.name) == profile
        assert load_profile(profile.path) == profile


def test_shipped_recipes_follow_the_hardware():
    profiles = {p.name: p for p in list_profiles()}
    assert "dotprod" not in profiles["raspberry-pi-4"].hardware.isa
    for name in ("raspberry-pi-5", "jetson-orin-nano-cpu", "apple-m-series"):
        assert "dotprod" in profiles[name].hardware.isa
    assert profiles["apple-m-series"].hardware.threads < profiles["apple-m-series"].hardware.cores  # P-cores only
    assert profiles["jetson-orin-nano-cpu"].hardware.cores == 6
    assert profiles["stm32mp25"].hardware.cores == 2 and profiles["stm32mp25"].hardware.memory_mb == 512
    assert profiles["stm32mp25"].quantization.mode == "weight-only"
    for profile in profiles.values():
        hw, q = profile.hardware, profile.quantization
        assert set(hw.isa) <= {"sse4.2", "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "avx-vnni", "neon",
                               "dotprod", "i8mm", "fp16", "sve"}
        assert "neon" in hw.isa if hw.arch == "arm64" else "avx2" in hw.isa
        # reduce-range only where u8s8 can saturate: x86 without VNNI (never on Arm)
        x86_without_vnni = hw.arch == "x86_64" and not {"avx512vnni", "avx-vnni"} & set(hw.isa)
        if q.mode in ("dynamic", "static"):
            assert q.reduce_range == x86_without_vnni, profile.name
        assert q.summary()
        assert 0 < profile.targets.max_accuracy_drop <= 2


def test_user_profile_by_path_needs_no_matching_file_name(tmp_path):
    path = write(tmp_path, VALID, "another-name.toml")
    profile = load_profile(str(path))
    assert isinstance(profile, DeviceProfile) and profile.name == "my-board" and profile.path == path
    assert profile.hardware.isa == ("neon", "dotprod", "fp16") and profile.targets.max_model_mb == 64.0
    assert profile.quantization.summary() == "dynamic int8 QOperator"


def test_zero_or_missing_targets_mean_no_target(tmp_path):
    profile = load_profile(write(tmp_path, VALID.replace("latency_ms_p50 = 20.0", "latency_ms_p50 = 0")
                                 .replace("max_model_mb = 64\n", "")))
    assert profile.targets.latency_ms_p50 is None and profile.targets.max_model_mb is None
    assert profile.as_dict()["targets"] == {"max_accuracy_drop": 1.0, "latency_ms_p50": None, "max_model_mb": None}


def test_with_quantization(tmp_path):
    profile = load_profile(write(tmp_path, VALID))
    safer = profile.with_quantization(per_channel=True, exclude_nodes=["^/classifier/"])
    assert safer.quantization.per_channel and safer.quantization.exclude_nodes == ("^/classifier/",)
    assert safer.hardware == profile.hardware and not profile.quantization.per_channel
    assert profile.with_quantization(mode="weight-only", weight_type="int4").quantization.weight_type == "int4"
    with pytest.raises(EdgeftError, match="quantization.weight_type"):
        profile.with_quantization(weight_type="int4")  # int4 needs weight-only
    with pytest.raises(TypeError, match="per_chanel"):
        profile.with_quantization(per_chanel=True)


def test_environment_variable_overrides_the_folder(tmp_path, monkeypatch):
    write(tmp_path, VALID)
    monkeypatch.setenv("EDGEFT_DEVICES", str(tmp_path))
    assert profiles_dir() == tmp_path
    assert [p.name for p in list_profiles()] == ["my-board"]


# --- one clear error per problem ------------------------------------------------------------

# (change to VALID, the field the message must name, more words it must contain)
BAD = {
    "missing field": (("cores = 4\n", ""), "hardware.cores", ["missing"]),
    "missing table": (("[runtime]\ngraph_optimization = \"all\"\nfuse_transformer = true\n", ""), "runtime",
                      ["missing"]),
    "bool is not int": (("cores = 4", "cores = true"), "hardware.cores", ["integer", "boolean true"]),
    "float is not int": (("memory_mb = 1024", "memory_mb = 1024.5"), "hardware.memory_mb", ["integer", "1024.5"]),
    "string is not int": (("threads = 4", 'threads = "4"'), "hardware.threads", ["integer", 'string "4"']),
    "int is not bool": (("per_channel = false", "per_channel = 0"), "quantization.per_channel",
                        ["boolean", "integer 0"]),
    "string is not array": (('isa = ["neon", "dotprod", "fp16"]', 'isa = "neon"'), "hardware.isa", ["array"]),
    "bool is not number": (("max_accuracy_drop = 1.0", "max_accuracy_drop = true"), "targets.max_accuracy_drop",
                           ["number", "boolean"]),
    "not allowed weight type": (('weight_type = "int8"', 'weight_type = "int16"'), "quantization.weight_type",
                                ['"int16"', "int8, uint8, int4"]),
    "not allowed mode": (('mode = "dynamic"', 'mode = "dymamic"'), "quantization.mode",
                         ["dynamic, static, weight-only, fp16, none", 'did you mean "dynamic"']),
    "not allowed arch": (('arch = "arm64"', 'arch = "aarch64"'), "hardware.arch", ["x86_64, arm64"]),
    "not allowed optimization": (('graph_optimization = "all"', 'graph_optimization = "max"'),
                                 "runtime.graph_optimization", ["disable, basic, extended, all"]),
    "unknown isa feature": (('isa = ["neon", "dotprod", "fp16"]', 'isa = ["neon", "dotprd"]'), "hardware.isa[1]",
                            ['"dotprd"', "did you mean \"dotprod\""]),
    "isa of the other arch": (('isa = ["neon", "dotprod", "fp16"]', 'isa = ["neon", "avx2"]'), "hardware.isa",
                              ['"avx2"', "not an arm64 feature"]),
    "duplicate isa": (('isa = ["neon", "dotprod", "fp16"]', 'isa = ["neon", "neon"]'), "hardware.isa",
                      ["more than once"]),
    "calibration too small": (("calibration_examples = 128", "calibration_examples = 0"),
                              "quantization.calibration_examples", ["out of range", "between 1 and 100000"]),
    "calibration too large": (("calibration_examples = 128", "calibration_examples = 100001"),
                              "quantization.calibration_examples", ["100001", "between 1 and 100000"]),
    "negative drop": (("max_accuracy_drop = 1.0", "max_accuracy_drop = -0.5"), "targets.max_accuracy_drop",
                      ["-0.5", "out of range"]),
    "negative latency": (("latency_ms_p50 = 20.0", "latency_ms_p50 = -1"), "targets.latency_ms_p50",
                         ["at least 0"]),
    "zero cores": (("cores = 4", "cores = 0"), "hardware.cores", ["out of range"]),
    "unknown field": (("per_channel = false", "per_chanel = false"), "quantization.per_chanel",
                      ["unknown field", "did you mean per_channel"]),
    "unknown top-level field": (("format_version = 1\n", "format_version = 1\nnotes = \"x\"\n"), "notes",
                                ["unknown field"]),
    "unknown table": (("[hardware]", "[hardwre]"), "hardwre", ["unknown table", "did you mean hardware"]),
    "newer format": (("format_version = 1", f"format_version = {FORMAT_VERSION + 1}"), "format_version",
                     ["newer", "upgrade edgeft"]),
    "missing format version": (("format_version = 1\n", ""), "format_version", ["missing"]),
    "int4 needs weight-only": (('weight_type = "int8"', 'weight_type = "int4"'), "quantization.weight_type",
                               ["int4", "weight-only"]),
    "threads above cores": (("threads = 4", "threads = 8"), "hardware.threads", ["8", "cores (4)"]),
    "bad regex": (("exclude_nodes = []", 'exclude_nodes = ["^/classifier/(", "x"]'),
                  "quantization.exclude_nodes[0]", ["regular expression"]),
    "op type spelling": (('op_types = ["MatMul", "Gemm", "Attention", "Gather"]', 'op_types = ["Matmul"]'),
                         "quantization.op_types[0]", ['did you mean "MatMul"']),
    "op list of numbers": (('op_types = ["MatMul", "Gemm", "Attention", "Gather"]', "op_types = [1, 2]"),
                           "quantization.op_types[0]", ["array of strings", "integer 1"]),
    "bad name": (('name = "my-board"', 'name = "my board/1"'), "name", ["letters, digits"]),
    "empty description": (('description = "My board: 4x Cortex-A55 @ 1.8 GHz, 2 GB"', 'description = " "'),
                          "description", ["empty"]),
    "missing targets table": (("[targets]\nmax_accuracy_drop = 1.0\nlatency_ms_p50 = 20.0\nmax_model_mb = 64\n",
                          ""), "targets", ["missing"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_each_schema_error_names_file_and_field(tmp_path, case):
    (old, new), field, words = BAD[case]
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(EdgeftError) as caught:
        load_profile(path)
    message = str(caught.value)
    assert str(path) in message, message
    assert field in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    assert len(message.splitlines()) <= 3  # one clear message: what, where, what to do


def test_value_of_wrong_toml_kind_for_a_table(tmp_path):
    path = write(tmp_path, 'runtime = "fast"\n' + VALID.replace(
        "[runtime]\ngraph_optimization = \"all\"\nfuse_transformer = true\n", ""))
    with pytest.raises(EdgeftError, match=r"runtime must be a table") as caught:
        load_profile(path)
    assert str(path) in str(caught.value)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, VALID.replace('arch = "arm64"', "arch = arm64"))
    with pytest.raises(EdgeftError) as caught:
        load_profile(path)
    line = VALID.splitlines().index('arch = "arm64"') + 1
    assert "not valid TOML" in caught.value.what
    assert caught.value.where.startswith(f"{path}, line {line}")


def test_duplicate_key_is_a_syntax_error(tmp_path):
    path = write(tmp_path, VALID.replace("cores = 4\n", "cores = 4\ncores = 6\n"))
    with pytest.raises(EdgeftError, match="not valid TOML") as caught:
        load_profile(path)
    assert str(path) in str(caught.value) and "line" in caught.value.where


def test_unknown_name_lists_the_available_profiles():
    with pytest.raises(EdgeftError) as caught:
        load_profile("raspbery-pi-5")
    assert "Unknown device profile 'raspbery-pi-5'" in caught.value.what
    assert "did you mean raspberry-pi-5" in caught.value.hint
    for name in EXPECTED:
        assert name in caught.value.hint


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(EdgeftError, match="does not exist") as caught:
        load_profile(str(path))
    assert str(path) in str(caught.value)
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(EdgeftError, match="not a file"):
        load_profile(folder)


def test_builtin_name_must_equal_file_stem(tmp_path, monkeypatch):
    folder = tmp_path / "devices"
    folder.mkdir()
    path = write(folder, VALID, "other-board.toml")
    monkeypatch.setenv("EDGEFT_DEVICES", str(folder))
    for attempt in (lambda: list_profiles(), lambda: load_profile("other-board"), lambda: load_profile(path)):
        with pytest.raises(EdgeftError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message and "field name" in message and '"my-board"' in message
        assert 'name = "other-board"' in caught.value.hint
    # the same file outside the profiles folder is a user's file: any name is fine
    outside = write(tmp_path, VALID, "other-board.toml")
    assert load_profile(outside).name == "my-board"


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(VALID.replace("My board", "Mein Gerät").encode("latin-1"))
    with pytest.raises(EdgeftError, match="UTF-8") as caught:
        load_profile(path)
    assert str(path) in str(caught.value)


def test_missing_profiles_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFT_DEVICES", str(tmp_path / "absent"))
    with pytest.raises(EdgeftError, match="does not exist") as caught:
        list_profiles()
    assert "EDGEFT_DEVICES" in caught.value.hint


# --- the command line -----------------------------------------------------------------------


def test_cli_lists_every_profile():
    result = cli()  # 80 columns: names never wrap
    assert result.returncode == 0, result.stderr
    for name in EXPECTED:
        assert name in result.stdout  # a result: `edgeft devices | grep pi` finds it
    assert result.stderr == ""
    wide = cli(columns=160)
    assert wide.returncode == 0, wide.stderr
    assert "dynamic int8 QOperator, per-channel, reduce-range" in wide.stdout
    assert "weight-only int8 (fp32 compute)" in wide.stdout


def test_cli_json_list_and_one(tmp_path):
    result = cli("--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert isinstance(listed, list) and {p["name"] for p in listed} >= EXPECTED
    assert listed == [p.as_dict() for p in list_profiles()]
    one = cli("raspberry-pi-5", "--json")
    assert one.returncode == 0, one.stderr
    data = json.loads(one.stdout)
    assert data["name"] == "raspberry-pi-5" and data["hardware"]["isa"] == ["neon", "dotprod", "fp16"]
    assert data["quantization"]["mode"] == "dynamic" and data["path"].endswith("raspberry-pi-5.toml")


def test_cli_shows_one_profile_and_a_user_file(tmp_path):
    shown = cli("raspberry-pi-4")
    assert shown.returncode == 0, shown.stderr
    assert "Cortex-A72" in shown.stdout and "profile is valid" in shown.stdout
    user = cli(str(write(tmp_path, VALID)))
    assert user.returncode == 0, user.stderr
    assert "my-board" in user.stdout and "Cortex-A55" in user.stdout


def test_cli_errors_are_one_message_without_traceback(tmp_path):
    unknown = cli("no-such-board")
    assert unknown.returncode == 1
    assert "error:" in unknown.stderr and "no-such-board" in unknown.stderr and "Traceback" not in unknown.stderr
    assert "raspberry-pi-5" in unknown.stderr  # the hint lists the names
    bad = write(tmp_path, VALID.replace('weight_type = "int8"', 'weight_type = "int3"'))
    for args in ((str(bad),), (str(bad), "--json")):
        result = cli(*args)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "error:" in result.stderr and "quantization.weight_type" in result.stderr
        assert str(bad) in result.stderr
        if "--json" in args:  # the error as JSON on stdout, what a script reads
            assert "quantization.weight_type" in json.loads(result.stdout)["error"]["what"]
        else:
            assert result.stdout == ""


def test_devices_side_imports_no_heavy_packages():
    code = ("import sys\nimport edgeft.devices, edgeft.commands.devices\n"
            f"print(sorted(m for m in {HEAVY + ('onnxruntime', 'onnx', 'numpy')!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_devices_command_runs_with_heavy_packages_blocked():
    code = ("import sys\n" + cli_calls(["devices"], ["devices", "stm32mp25", "--json"]) +
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if sys.modules.get(m) is not None))\n")
    out = run_device_side(code)
    assert out.returncode == 0, out.stderr
    assert '"name": "stm32mp25"' in out.stdout and "HEAVY []" in out.stdout
    assert "x86-64-avx2" in out.stdout
