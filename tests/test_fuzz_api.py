"""schemathesis against the live API (gunicorn) from GET /api/openapi.json: no 5xx, responses match.

Bounded and reproducible: a fixed seed, a fixed number of examples per operation, one worker and no
example database. Phases: examples, coverage, fuzzing and stateful (links from a 202 to the message).
Run only this with `make fuzz`; it is also part of `make test`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from messaging import openapi
from tests.pii_log_check import find_full_values
from tests.processes import running_services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

SEED = 20261101
MAX_EXAMPLES = 50
# Every check schemathesis has except positive_data_acceptance: a schema-valid body can still be refused
# for reasons a schema cannot say (a phone number that is not a real number, delay and scheduledFor both
# set), and the document says so.
EXCLUDED_CHECKS = "positive_data_acceptance"
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3}) ')


def test_fuzzing_the_api_finds_no_5xx_and_every_response_matches_the_document(api_key, tmp_path):
    st = Path(sys.executable).with_name("st")
    with running_services(
        tmp_path,
        worker=False,
        scheduler=False,
        API_RATE_LIMIT_PER_KEY="100000/second",
        GUNICORN_CMD_ARGS="--access-logfile -",
    ) as services:
        result = subprocess.run(
            [
                str(st),
                "run",
                f"{services.base_url}/api/openapi.json",
                "--header",
                f"Authorization: Bearer {api_key}",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED_CHECKS,
                "--seed",
                str(SEED),
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-database",
                "none",
                "--workers",
                "1",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            cwd=tmp_path,  # schemathesis keeps a cache in its working directory
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        web_log = services.output("web")
    report = result.stdout + result.stderr
    (tmp_path / "schemathesis.txt").write_text(report)
    assert result.returncode == 0, report[-6000:]
    # Every documented operation but the document itself (schemathesis leaves out the URL it loaded).
    operations = sum(len(methods) for path, methods in openapi.PATHS.items() if path != "/api/openapi.json")
    assert f"Operations:       {operations} selected / {operations} total" in report
    assert re.search(r"\d+ generated, \d+ passed", report), report[-2000:]
    assert " failed" not in report.split("SUMMARY")[-1], report[-3000:]

    # The server's own access log: what was really sent, and that nothing answered 5xx.
    requests_seen = [m.groupdict() for m in ACCESS_LINE.finditer(web_log)]
    statuses = [int(r["status"]) for r in requests_seen]
    assert len(statuses) > 300, f"only {len(statuses)} requests reached the server"
    server_errors = [r for r in requests_seen if int(r["status"]) >= 500]
    assert server_errors == []
    assert {202, 400, 401, 404, 405} <= set(statuses)
    assert "Traceback" not in web_log
    # Fuzzed bodies are full of look-alike numbers and addresses; none reaches a log unmasked.
    assert find_full_values(web_log) == []
