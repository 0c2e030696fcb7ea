"""Run the processes of `make run` together and stop every one of them however the run ends
(development only; used by `manage.py run_dev`).

`Supervisor` starts each command in a session of its own, with its output prefixed by its name (as
honcho and foreman do). Being in their own sessions, the children get no signal from the terminal:
only `run_dev` decides when they stop, so a Ctrl+C stops each of them once, in order. The run ends on
SIGINT (Ctrl+C), SIGTERM, SIGHUP (the terminal closed), a child exiting on its own, or when
`ParentWatch` sees that the parent of `run_dev` (make) exited or is dying. Then every child's process
group gets SIGTERM, and SIGKILL after `stop_timeout` seconds (or at once on a second signal); the
group, so that what a child started itself (runserver's autoreloader child) stops too. Children
marked `last` (Redis) are stopped after the others, which need it to stop cleanly.

On Linux every child is started with PR_SET_PDEATHSIG = SIGTERM (prctl(2)): the kernel stops it when
`run_dev` dies, even of SIGKILL. `run_dev` asks the same for itself, so it stops when make is killed.

Why `ParentWatch` is needed (GNU make 4.3, commands.c `fatal_error_signal`): on SIGHUP or SIGINT make
resets that signal to its default action and waits for its children to exit before dying, without
telling them; on SIGTERM it forwards SIGTERM to its children first. A `kill -HUP` of make alone would
leave make waiting for `run_dev` forever. The kernel shows the reset: the signal leaves the parent's
caught-signal mask (SigCgt in /proc/<pid>/status, proc(5)).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
# The signals that stop a run.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds each child gets to stop after SIGTERM before SIGKILL.
STOP_TIMEOUT_SECONDS = 8.0
# Seconds between looks at the children and the parent.
POLL_SECONDS = 0.1
# Name used for the supervisor's own lines.
OWN_NAME = "run_dev"

_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)


def parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `signum` to the calling process when its parent exits (Linux
    prctl(PR_SET_PDEATHSIG), which survives exec but not fork). Returns True when set, False where
    the call does not exist (macOS and others), so callers fall back to `ParentWatch`."""
    if _libc is None:
        return False
    return _libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


class ParentWatch:
    """Tells when the parent of this process has exited, or has stopped catching one of `signals`
    that it caught when the watch was made (it is dying of it; see the module docstring). Reads
    /proc on Linux; elsewhere only the parent's exit is seen (the parent id changes)."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS):
        self.pid = os.getppid()
        self.signals = signals
        self.caught_at_start = self._caught()

    def _caught(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
        return None

    def reason(self) -> str | None:
        """None while the parent lives and catches the same signals; else why the run should end."""
        if os.getppid() != self.pid:
            return "make (the parent process) exited"
        if self.caught_at_start is None:
            return None
        caught = self._caught()
        if caught is None:
            return "make (the parent process) exited"
        for signum in self.signals:
            bit = 1 << (signum - 1)
            if self.caught_at_start & bit and not caught & bit:
                return f"make (the parent process) received {signal.Signals(signum).name}"
        return None


@dataclass
class Child:
    """One supervised process: its name, the Popen handle, and whether it stops after the others."""

    name: str
    process: subprocess.Popen
    last: bool = False


class Supervisor:
    """Starts commands (`start`), then waits and stops them all (`run`). See the module docstring.

    `out`: where prefixed output lines go (default sys.stdout). `stop_timeout`: seconds between
    SIGTERM and SIGKILL for each group of children."""

    def __init__(self, out: IO[str] | None = None, stop_timeout: float = STOP_TIMEOUT_SECONDS):
        self.out = out or sys.stdout
        self.stop_timeout = stop_timeout
        self.children: list[Child] = []
        self._width = len(OWN_NAME)
        self._write_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._signals: list[int] = []

    def say(self, name: str, line: str) -> None:
        """Write one line as `name | line` (thread-safe)."""
        with self._write_lock:
            self.out.write(f"{name:<{self._width}} | {line}\n")
            self.out.flush()

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        quiet: bool = False,
        last: bool = False,
    ) -> subprocess.Popen:
        """Start `argv` (no shell) in a session of its own, stdin closed, PR_SET_PDEATHSIG = SIGTERM;
        its stdout and stderr are written out line by line as `name | line`, or dropped with `quiet`.
        Raises OSError when the command cannot be started."""
        parent = os.getpid()

        def child_setup() -> None:  # runs in the child between fork and exec
            parent_death_signal(signal.SIGTERM)
            if os.getppid() != parent:  # the supervisor died before the line above
                os._exit(1)

        process = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_setup,  # only a prctl call, no lock taken
        )
        child = Child(name, process, last)
        self.children.append(child)
        self._width = max(self._width, len(name))
        if not quiet:
            pump = threading.Thread(target=self._pump, args=(child,), name=f"output-{name}", daemon=True)
            pump.start()
            self._pumps.append(pump)
        return process

    def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        for raw in iter(child.process.stdout.readline, b""):
            self.say(child.name, raw.decode(errors="replace").rstrip("\r\n"))
        child.process.stdout.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def run(self, watch: ParentWatch | None = None) -> int:
        """Block until a stop signal, a child's exit or `watch` ends the run; stop every child and
        return an exit status: 0 when asked to stop, else the status of the child that ended (1 for
        one killed by a signal). Call from the main thread (it installs signal handlers)."""
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        try:
            status, reason = self._wait(watch)
            self.say(OWN_NAME, f"{reason}; stopping {', '.join(c.name for c in self.children)}")
            self.stop()
            self.say(OWN_NAME, "all stopped")
            return status
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _wait(self, watch: ParentWatch | None) -> tuple[int, str]:
        next_watch = 0.0
        while True:
            if self._signals:
                return 0, f"{signal.Signals(self._signals[0]).name} received"
            for child in self.children:
                code = child.process.poll()
                if code is not None:
                    return (1 if code < 0 else code), f"{child.name} exited with status {code}"
            if watch is not None and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + 5 * POLL_SECONDS
                reason = watch.reason()
                if reason:
                    return 0, reason
            time.sleep(POLL_SECONDS)

    def stop(self) -> None:
        """SIGTERM to every child's process group (those marked `last` after the others have gone),
        SIGKILL after `stop_timeout` seconds or at a further stop signal; returns once every child has
        exited. SIGKILL also goes to each group once its leader is gone, for anything left in it."""
        signals_seen = len(self._signals)
        for group in ([c for c in self.children if not c.last], [c for c in self.children if c.last]):
            for child in group:
                self._signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while any(c.process.poll() is None for c in group):
                if time.monotonic() >= deadline or len(self._signals) > signals_seen:
                    break
                time.sleep(0.05)
            for child in group:
                self._signal_group(child, signal.SIGKILL)
                child.process.wait()
        for pump in self._pumps:
            pump.join(timeout=2)

    @staticmethod
    def _signal_group(child: Child, signum: int) -> None:
        # The group's id is the leader's pid (its own session). Linux does not hand out a pid still
        # in use as a process group id, so this reaches only what is left of our child's group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.process.pid, signum)
