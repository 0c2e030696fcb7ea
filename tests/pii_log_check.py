"""pytest plugin (loaded with `-p tests.pii_log_check`): grep the whole test run's logs for personal data.

Every log record of the run, at DEBUG and above, is written to test-artifacts/test-run.log by a plain
handler with no filter of ours, so it shows what any handler would print. When the run ends the file is
searched for full phone numbers and email addresses; finding one fails the run (exit status 1) and
prints where. Paths and query strings (request lines, Referer URLs, Django's "Not Found: <path>") are
also searched decoded, as a browser or client encodes them: `%2B1+415+555+0123`, `%28415%29%20555-0123`,
a `?next=` URL inside another. The suite logs plenty of both unmasked in its inputs, so this fails if the masking in
messaging.lib.pii stops applying to every record.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import unquote, unquote_plus

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

# Paths and query strings in a line; Django's request log prints the decoded path, spaces and all.
URL_TOKEN = re.compile(r"[/?][^\s\"'<>]*")
REQUEST_LOG_PATH = re.compile(r" django\.(?:request|server) [^:]*: (/.*)$")
# A number with spaces, dots, dashes or brackets between digit groups (counted in decoded_phone_numbers).
LOOSE_PHONE = re.compile(r"(?<![\w*-])(?:\+|00)?\(?\d[\d ().-]*\d(?![\w*-])")

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


def _decodings(text: str) -> set[str]:
    """`text` decoded up to 3 times (a URL inside a query value is encoded twice, and so on), reading
    "+" as a space or not: every spelling a reader could take from it."""
    spellings, frontier = {text}, {text}
    for _ in range(3):
        frontier = {step(value) for value in frontier for step in (unquote_plus, unquote)} - spellings
        spellings |= frontier
    return spellings


def _url_values(line: str) -> list[tuple[str, str]]:
    """(kind, text) of the full numbers and addresses in the paths and query strings of `line`."""
    tokens = [match.group(0) for match in URL_TOKEN.finditer(line)]
    tokens += [match.group(1) for match in REQUEST_LOG_PATH.finditer(line)]
    found = []
    for token in tokens:
        for decoded in _decodings(token) - {token}:
            for kind, pattern in FULL_VALUES:
                found.extend((f"{kind} in a URL", match.group(0)) for match in pattern.finditer(decoded))
        for decoded in _decodings(token):
            for match in LOOSE_PHONE.finditer(decoded):
                digits = sum(c.isdigit() for c in match.group(0))
                international = match.group(0).startswith(("+", "00"))
                if (8 if international else 10) <= digits <= 15:
                    found.append(("phone number in a URL", match.group(0)))
    return sorted(set(found))


def find_full_values(text: str) -> list[tuple[int, str, str]]:
    """Return (line number, kind, matched text) for every unmasked phone number or address in `text`,
    also in its paths and query strings once decoded."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in FULL_VALUES:
            found.extend((number, kind, match.group(0)) for match in pattern.finditer(line))
        found.extend((number, kind, value) for kind, value in _url_values(line))
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
