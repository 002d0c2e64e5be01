"""A real Flower deployment on this machine: a SuperLink and three SuperNodes as separate
processes on 127.0.0.1, an app folder written by ``edgeft fleet app``, started with ``flwr run``.

Three rounds; one SuperNode is killed (its whole process group, SIGKILL) while it trains in round
2, and the federation still completes because a round needs two replies of three; the global
model improves; afterwards no process of the federation is left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the fleet extra (Flower) is not installed")

from edgeft.cli import main  # noqa: E402
from test_train import LABELS, dataset, held_out_rows, write_csv  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_of(home: Path) -> list[int]:
    """Live processes started for this federation (they inherit its FLWR_HOME)."""
    found = []
    marker = f"FLWR_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") and \
                        b"zombie" not in (entry / "status").read_bytes().lower():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_superlink_and_three_supernodes_survive_a_supernode_killed_mid_round(tiny_bert, export_cache, tmp_path):
    artifacts = export_cache(model=str(tiny_bert), label_names=LABELS, train="last:1", dropout=False).folder
    rows = dataset(0, 30)
    # device 2, the one killed while it trains, holds ten times the data: its round lasts long enough
    # that the kill lands before its reply (the test checks that it did)
    devices = [write_csv(tmp_path / f"device-{i}.csv", rows[i::3] * (10 if i == 2 else 1)) for i in range(3)]
    val = write_csv(tmp_path / "held_out.csv", held_out_rows())
    home = tmp_path / "flwr-home"
    home.mkdir()
    link = free_port()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "here"\n\n[superlink.here]\n'
                                      f'address = "127.0.0.1:{link}"\ninsecure = true\n')
    app, run_dir = tmp_path / "app", tmp_path / "run"
    main(["fleet", "app", str(app), str(artifacts), "--val", str(val), "--run-dir", str(run_dir), "--rounds", "3",
          "--lr", "1e-2", "--local-epochs", "3", "--min-clients", "2", "--min-train-clients", "2",
          "--round-timeout", "120"])
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    started: list[subprocess.Popen] = []

    handles = []

    def start(args: list[str], log: Path) -> subprocess.Popen:
        handles.append(open(log, "wb"))
        process = subprocess.Popen(args, stdout=handles[-1], stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)  # its own process group: killed with its children
        started.append(process)
        return process

    try:
        start([str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(link),
               "--database", str(tmp_path / "state.db")], tmp_path / "superlink.log")
        wait_for(lambda: b"Uvicorn running" in (tmp_path / "superlink.log").read_bytes(), 60, "the SuperLink")
        logs = [tmp_path / f"supernode-{i}.log" for i in range(3)]
        nodes = [start([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                        "--port", str(free_port()), "--node-config", f"data='{device}'"], log)
                 for device, log in zip(devices, logs)]
        # all three registered before the run starts, so round 1 asks each of them
        wait_for(lambda: (tmp_path / "superlink.log").read_text(errors="replace").count("Activated node_id") >= 3,
                 120, "three SuperNodes to register")
        runner = start([str(BIN / "flwr"), "run", str(app), "here", "--stream"], tmp_path / "flwr-run.log")

        def training_in_round_2() -> bool:
            text = logs[2].read_text(errors="replace")
            return "ROUND 2]" in text and "Receiving: train message" in text.split("ROUND 2]", 1)[1]

        wait_for(training_in_round_2, 240, "SuperNode 2 to receive its round-2 train message")
        os.killpg(nodes[2].pid, signal.SIGKILL)
        killed_log = logs[2].read_text(errors="replace")
        assert runner.wait(timeout=400) == 0, (tmp_path / "flwr-run.log").read_text(errors="replace")[-3000:]
        assert "Sending: train message" not in killed_log.split("ROUND 2]", 1)[1]  # it died before replying
    finally:
        for process in started:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for handle in handles:
            handle.close()
        try:
            wait_for(lambda: not processes_of(home), 30, "every process of the federation to end")
        finally:  # whatever is left (e.g. a SuperExec in a session of its own) is not left running
            for pid in processes_of(home):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    import edgeft

    run = edgeft.Run.open(run_dir)
    history = run.history
    assert [entry["round"] for entry in history] == [0, 1, 2, 3]
    assert [entry["clients"] for entry in history[1:]] == [3, 2, 2]
    assert [entry["failures"] for entry in history[1:]] == [0, 1, 0]
    assert run.summary["best"]["accuracy"] >= history[0]["val"]["accuracy"] + 0.2
