"""`make run` owns its processes, and an idle one is quiet.

Each test runs the real `make run` (its own process group, a free port, a redis-server that run_dev
starts for the run on another free port, a SQLite database of the module's own), stops it the way a
user or the system would, and then looks for anything it started: no process may be left and both
ports must be free within a few seconds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from django.conf import settings

from tests.process_control import free_port, wait_for

pytestmark = pytest.mark.processes

ROOT = Path(settings.BASE_DIR)
# Seconds everything must be gone within once `make run` is told to stop.
STOP_WITHIN_SECONDS = 15


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The database and state directory the tests of this module share (migrated once)."""
    return tmp_path_factory.mktemp("make-run")


@pytest.fixture
def make_run(run_dir):
    """Start `make run` (keyword arguments: extra environment); whatever is left of it when the test
    ends, passed or failed, is killed."""
    started: list[MakeRun] = []

    def start(**env: str) -> MakeRun:
        started.append(MakeRun(run_dir, **env))
        return started[-1]

    yield start
    for run in started:
        run.kill_leftovers()


class MakeRun:
    """A `make run` started in a new session (its own process group), with its output in a file."""

    def __init__(self, run_dir: Path, **env: str):
        self.port, self.redis_port = free_port(), free_port()
        self.log = run_dir / f"make-run-{self.port}.log"
        self.seen: set[int] = set()
        environment = {
            **os.environ,
            "DJANGO_ENV": "development",
            "DATABASE_URL": f"sqlite:///{run_dir / 'run.sqlite3'}",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        with open(self.log, "wb") as out:
            # -o install -o .env: use this interpreter and leave the checkout's .env alone.
            self.make = subprocess.Popen(
                ["make", "--no-print-directory", "-o", "install", "-o", ".env", "run", f"PY={sys.executable}"]
                + [f"RUN_ARGS=--state-dir {run_dir / 'state'}"],
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_ready(self) -> None:
        def ready() -> bool:
            assert self.make.poll() is None, f"make run ended early:\n{self.output()}"
            text = self.output()
            if "Listening on" not in text or "Registering birth" not in text:
                return False
            try:
                return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(ready, 90, interval=0.25, what="make run to start web, worker and scheduler")
        self.processes()

    def processes(self) -> set[int]:
        """make and every process below it, now (also kept for `kill_leftovers`)."""
        self.seen |= {self.make.pid} | descendants(self.make.pid)
        return {self.make.pid} | descendants(self.make.pid)

    def kill_leftovers(self) -> None:
        """SIGKILL every process of this run still running, and reap make."""
        for pid in self.seen | descendants(self.make.pid):
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        if self.make.poll() is None:
            self.make.kill()
        self.make.wait(timeout=10)

    def run_dev_pid(self) -> int:
        (pid,) = children_of().get(self.make.pid, [])
        return pid


def children_of() -> dict[int, list[int]]:
    """{parent pid: child pids} of every process, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    tree, found, todo = children_of(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an exited process its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def port_free(port: int) -> bool:
    """True when nothing listens on `port` (connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def assert_all_gone(run: MakeRun, pids: set[int]) -> None:
    """Within STOP_WITHIN_SECONDS: none of `pids` runs and both ports are free."""
    deadline = time.monotonic() + STOP_WITHIN_SECONDS
    while time.monotonic() < deadline:
        left = {pid for pid in pids if running(pid)}
        if not left and port_free(run.port) and port_free(run.redis_port):
            break
        time.sleep(0.2)
    left = {pid for pid in pids if running(pid)}
    described = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in left}
    assert not left, f"still running {STOP_WITHIN_SECONDS}s later: {described}\n{run.output()}"
    assert port_free(run.port), f"port {run.port} still bound\n{run.output()}"
    assert port_free(run.redis_port), f"Redis port {run.redis_port} still bound\n{run.output()}"


@pytest.mark.parametrize(
    "how",
    ["SIGTERM to make", "SIGHUP to make", "SIGKILL to run_dev"],
)
def test_stopping_make_run_stops_everything_it_started(make_run, how):
    run = make_run()
    run.wait_until_ready()
    pids = run.processes()
    # make, run_dev, redis-server, runserver and its autoreloader child, rqworker, rqscheduler.
    assert len(pids) >= 7, pids
    if how == "SIGTERM to make":
        os.kill(run.make.pid, signal.SIGTERM)
    elif how == "SIGHUP to make":  # what closing the terminal sends
        os.kill(run.make.pid, signal.SIGHUP)
    else:
        os.kill(run.run_dev_pid(), signal.SIGKILL)
    assert_all_gone(run, pids)


def log_message(line: str) -> str | None:
    """The message of a log line written by `make run` ("name | <timestamp> LEVEL logger message"),
    without its prefix and time; None for a line that is not a log record."""
    found = re.match(r"^\S+\s+\| (?:\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d(?:,\d+)? (.*)$", line)
    return found.group(1) if found else None


def test_an_idle_make_run_logs_nothing_after_startup_and_no_line_twice_then_ctrl_c_stops_it(make_run):
    # The sweep every second: five times as many chances to log as by default.
    run = make_run(SWEEP_INTERVAL_SECONDS="1")
    run.wait_until_ready()
    time.sleep(3)  # the first sweep and retention runs, and anything else startup does
    started = run.output()
    time.sleep(12)
    idle = run.output()[len(started) :]
    assert idle == "", f"an idle make run logged:\n{idle}"

    messages = Counter(message for line in started.splitlines() if (message := log_message(line)))
    assert messages, started
    twice = {message: count for message, count in messages.items() if count > 1}
    assert not twice, f"logged more than once: {twice}\n{started}"

    pids = run.processes()
    os.killpg(run.make.pid, signal.SIGINT)  # Ctrl+C: the terminal's foreground group (make, run_dev)
    assert_all_gone(run, pids)
