"""The README's curl examples run as written against a real `make run` and answer what it shows.

Every ```sh block of README.md that calls curl or sets the examples' variables is run, in order, in
one bash session (as a user pasting them into one terminal would), in a directory laid out like a
checkout after `make run` (`.run/api-key`, `.env`). The only edit is the one the README asks for: the
port in `BASE`. The plain ``` block right after an example is its shown answer: its status lines,
metric names, keys and the values that do not change between runs must all be in the real answer.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from tests.test_run_dev_processes import MakeRun

pytestmark = pytest.mark.processes

README = Path(settings.BASE_DIR) / "README.md"

# Every endpoint must have an example (a text each example block must hold between them).
ENDPOINTS = (
    "/api/schedule-sms",
    "/api/schedule-sms/bulk",
    "/api/schedule-email",
    "/api/ai-response",
    "/api/messages/$ID",
    "/api/messages/$ID/cancel",
    "Idempotency-Key:",
    "/api/queues",
    "/health",
    "/health/ready",
    "/metrics",
)
# Keys whose shown values must be the real ones (ids, times and counts differ between runs).
STABLE_KEYS = {
    "success",
    "status",
    "channel",
    "message",
    "kind",
    "outcome",
    "httpStatus",
    "accepted",
    "rejected",
    "attempts",
    "lastError",
    "encoding",
    "segments",
    "messageId",
    "responseText",
    "aiModel",
    "database",
    "redis",
}
JSON_PAIR = re.compile(r'"(\w+)": ("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false|null)')


def readme_examples(text: str) -> list[tuple[str, str | None]]:
    """[(shell code, shown answer or None)] for every example block of the README, in order."""
    fences = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    examples = []
    for index, (language, code) in enumerate(fences):
        if language != "sh" or not ("curl " in code or "QS_API_KEY" in code):
            continue
        following = fences[index + 1] if index + 1 < len(fences) else None
        examples.append((code, following[1] if following and following[0] == "" else None))
    return examples


def shown_facts(shown: str) -> list[str]:
    """The parts of a shown answer that a real answer must contain: status and header lines, metric
    names, every JSON key, and `"key": value` for STABLE_KEYS."""
    facts = []
    for line in shown.splitlines():
        if line.startswith(("HTTP/", "Idempotent-Replayed")):
            facts.append(line.strip())
        elif re.match(r"^[a-z_]+[{ ]", line):
            facts.append(re.match(r"^[a-z_]+", line).group())
    for key, value in JSON_PAIR.findall(shown):
        facts.append(f'"{key}": {value}' if key in STABLE_KEYS and "…" not in value else f'"{key}":')
    return facts


def test_the_readme_has_an_example_for_every_endpoint():
    code = "\n".join(example for example, _ in readme_examples(README.read_text()))
    missing = [endpoint for endpoint in ENDPOINTS if endpoint not in code]
    assert not missing, f"no README example uses {missing}"


def test_every_readme_example_runs_as_written_and_answers_as_shown(tmp_path):
    examples = readme_examples(README.read_text())
    token = secrets.token_urlsafe(32)
    run = MakeRun(tmp_path, METRICS_TOKEN=token)
    try:
        run.wait_until_ready()
        checkout = tmp_path / "checkout"
        checkout.mkdir()
        (checkout / ".run").symlink_to(tmp_path / "state")
        (checkout / ".env").write_text(f"METRICS_TOKEN={token}\n")
        script = []
        for number, (code, _) in enumerate(examples):
            if "export BASE=" in code:  # the one edit the README asks for when make run has a PORT
                code = code.replace("http://127.0.0.1:8000 ", f"http://127.0.0.1:{run.port} ")
            script.append(f"echo '@@example {number}@@'\n{code}")
        done = subprocess.run(
            ["bash"], input="\n".join(script), cwd=checkout, capture_output=True, text=True, timeout=120
        )
    finally:
        run.kill_leftovers()
    outputs = re.split(r"^@@example \d+@@\n", done.stdout, flags=re.M)[1:]
    assert len(outputs) == len(examples), done.stdout + done.stderr
    assert not done.stderr, done.stderr
    for (code, shown), output in zip(examples, outputs):
        if "curl " in code:
            assert output.strip(), f"no answer from:\n{code}"
        if shown is None:
            continue
        missing = [fact for fact in shown_facts(shown) if fact not in output]
        assert not missing, f"the README shows {missing}, which the real answer lacks.\n{code}\n{output}"
