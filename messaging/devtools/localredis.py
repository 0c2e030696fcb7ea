"""A Redis on this machine for `make run` and the test suite (development only; no Django needed).

`make run` (run_dev) and `make test` use it so that a fresh machine needs no manual step: when no
Redis answers at a local URL, `redis-server` is installed from the system's packages if missing
(`redis_server_install`: apt-get on Debian/Ubuntu, through sudo when not root, as `make browser` does
for Chromium; Homebrew on macOS) and started for the session without persistence.

Command line (used by the Makefile): `python -m messaging.devtools.localredis install` installs
redis-server when it is missing; exit status 1 when it is still missing afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# apt-get waits up to 10 minutes for another package manager run (e.g. `make browser`) to finish.
APT_WAIT = ("-o", "DPkg::Lock::Timeout=600")


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at `url` within `timeout` seconds (an authentication
    error also counts: a server is there)."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except redis.exceptions.AuthenticationError:
        return True
    except redis.exceptions.RedisError:
        return False


def is_local(url: str) -> bool:
    """True when `url` names a Redis on this machine (127.0.0.1, localhost or ::1), one we may start."""
    parts = urlsplit(url)
    return parts.scheme == "redis" and (parts.hostname or "127.0.0.1") in LOCAL_HOSTS


def install_commands() -> list[list[str]]:
    """The commands that install redis-server from this system's packages, in order; [] when no
    known package manager is found. apt-get runs through sudo when not root (and sudo exists)."""
    if shutil.which("apt-get"):
        sudo = ["sudo"] if os.geteuid() != 0 and shutil.which("sudo") else []
        return [
            [*sudo, "apt-get", *APT_WAIT, "update", "-qq"],
            [*sudo, "apt-get", *APT_WAIT, "install", "-y", "-qq", "redis-server"],
        ]
    if shutil.which("brew"):
        return [["brew", "install", "redis"]]
    return []


def redis_server_install(say: Callable[[str], None] = print) -> str | None:
    """Return the path of redis-server, installing it first (`install_commands`) when it is missing.
    Returns None when it is still missing (no package manager, or the install failed; the package
    manager's own errors were shown on stderr). `say` gets one line about what is being done."""
    found = shutil.which("redis-server")
    if found:
        return found
    commands = install_commands()
    if not commands:
        return None
    say(f"redis-server is not installed; installing it: {' && '.join(' '.join(c) for c in commands)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in commands:
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            return None
    return shutil.which("redis-server")


def redis_server_argv(server: str, url: str) -> list[str]:
    """Arguments that run `server` (a redis-server path) for `url`'s port on 127.0.0.1, without
    persistence (nothing written to disk) and quiet."""
    port = urlsplit(url).port or 6379
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


def wait_until_answers(url: str, timeout: float = 5.0) -> bool:
    """Poll `url` every 0.1 s for up to `timeout` seconds; True once Redis answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if redis_answers(url, timeout=0.5):
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str]) -> int:
    """`install`: install redis-server when missing (see the module docstring). Returns the exit status."""
    if argv != ["install"]:
        print("usage: python -m messaging.devtools.localredis install", file=sys.stderr)
        return 2
    if redis_server_install() is None:
        print(
            "redis-server is missing and could not be installed from the system's packages (no apt-get "
            "or brew, or the install failed): install Redis, then run this again.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
