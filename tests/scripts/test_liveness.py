"""scripts/lib.sh liveness (issue 18, item 6): a process that exited but is not yet reaped (a
zombie, which `kill -0` still reaches) is not alive, so `scripts/services.sh start` right after
a SIGKILL relaunches it; a running or a stopped (SIGSTOP) process is alive; a pidfile naming no
process or garbage is not."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def pid_alive(tmp: Path, pid: str) -> bool:
    pidfile = tmp / "probe.pid"
    pidfile.write_text(pid + "\n")
    done = subprocess.run(
        ["bash", "-c", f'source scripts/lib.sh && pid_alive "{pidfile}"'],
        cwd=REPO_ROOT,
        env={
            "STATE_DIR": str(tmp / "state"),
            "MAILCTL_CACHE_DIR": str(tmp / "cache"),
            "HOME": str(tmp),
            "PATH": "/usr/bin:/bin",
        },
        check=False,
    )
    return done.returncode == 0


def state_of(pid: int) -> str:
    return (Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1]).split()[0]


def wait_state(pid: int, wanted: str) -> None:
    deadline = time.monotonic() + 10
    while state_of(pid) != wanted:
        assert time.monotonic() < deadline, f"pid {pid} never reached state {wanted}"
        time.sleep(0.01)


def test_a_killed_process_not_yet_reaped_is_not_alive(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "300"])
    try:
        assert pid_alive(tmp_path, str(child.pid))
        child.send_signal(signal.SIGKILL)
        wait_state(child.pid, "Z")  # not reaped: this test is its parent and has not waited
        assert not pid_alive(tmp_path, str(child.pid))
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(tmp_path, str(child.pid))


def test_a_stopped_process_is_alive(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "300"])
    try:
        child.send_signal(signal.SIGSTOP)
        wait_state(child.pid, "T")
        assert pid_alive(tmp_path, str(child.pid))
    finally:
        child.kill()
        child.wait()


def test_garbage_in_the_pidfile_is_not_alive(tmp_path: Path) -> None:
    assert not pid_alive(tmp_path, "")
    assert not pid_alive(tmp_path, "12 34")
    assert not pid_alive(tmp_path, "not-a-pid")
