"""pytest plugin (loaded with `-p tests.pii_log_check`): grep the whole test run's logs for personal data.

Every log record of the run, at DEBUG and above, is written to test-artifacts/test-run.log by a plain
handler with no filter of ours, so it shows what any handler would print. When the run ends the file is
searched for full phone numbers and email addresses; finding one fails the run (exit status 1) and
prints where. The suite logs plenty of both unmasked in its inputs, so this fails if the masking in
messaging.lib.pii stops applying to every record.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

LOG_PATH = Path(__file__).resolve().parent.parent / "test-artifacts" / "test-run.log"

# What an unmasked value looks like; masked ones ("+1415***0123", "r***@example.com") do not match.
FULL_VALUES = [
    ("phone number", re.compile(r"(?:\+|%2[Bb])\d(?:[ .-]?\d){7,14}(?!\d)")),
    ("phone number", re.compile(r"(?<![\w.%*+-])\d{10,15}(?![\w*-])")),
    (
        "email address",
        re.compile(r"(?<![\w.%*+'-])[A-Za-z0-9._%+'-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"),
    ),
]

_handler: logging.Handler | None = None


@pytest.fixture(autouse=True, scope="session")
def _capture_all_logs():
    """Attach the run-wide file handler once Django has configured logging."""
    global _handler
    LOG_PATH.parent.mkdir(exist_ok=True)
    _handler = logging.FileHandler(LOG_PATH, mode="w", encoding="utf-8")
    _handler.setLevel(logging.DEBUG)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    # First in line, before the console handler whose filter would mask the record in place.
    root.handlers.insert(0, _handler)
    root.setLevel(logging.DEBUG)
    yield
    root.setLevel(previous)
    root.removeHandler(_handler)
    _handler.close()


def find_full_values(text: str) -> list[tuple[int, str, str]]:
    """Return (line number, kind, matched text) for every unmasked phone number or address in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in FULL_VALUES:
            found.extend((number, kind, match.group(0)) for match in pattern.finditer(line))
    return found


def pytest_sessionfinish(session, exitstatus):
    if _handler is None or not LOG_PATH.exists():
        return
    leaks = find_full_values(LOG_PATH.read_text(encoding="utf-8", errors="replace"))
    session.config._pii_leaks = leaks
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    leaks = getattr(config, "_pii_leaks", None)
    if leaks is None:
        return
    if leaks:
        terminalreporter.section("personal data in logs", sep="=", red=True, bold=True)
        for number, kind, value in leaks[:20]:
            terminalreporter.write_line(f"{LOG_PATH.name}:{number}: full {kind} {value!r}")
        terminalreporter.write_line(f"{len(leaks)} unmasked value(s) in {LOG_PATH}: the run fails.")
    else:
        terminalreporter.write_line(
            f"Logs of this run ({LOG_PATH.name}): no full phone number or email address."
        )
