"""schemathesis against the live API (gunicorn) from GET /api/openapi.json: no 5xx, responses match.

Bounded and reproducible: a fixed seed, a fixed number of examples per operation, one worker and no
example database. Phases: examples, coverage, fuzzing and stateful (links from a 202 to the message).
tests/fuzz_hooks.py also puts control characters, digits of other scripts, lone surrogates and
NaN / Infinity into every string and number field of half the cases. Run only this with `make fuzz`;
it is also part of `make test`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from messaging import openapi
from tests.pii_log_check import find_full_values
from tests.processes import BASE_DIR, running_services

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
                "--report",
                "har",
                "--report-har-path",
                str(tmp_path / "requests.har"),
            ],
            cwd=tmp_path,  # schemathesis keeps a cache in its working directory
            env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(BASE_DIR)},
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

    # The hostile values really went out, to every operation with a body (tests/fuzz_hooks.py).
    sent: dict[str, str] = {}
    for entry in json.loads((tmp_path / "requests.har").read_text())["log"]["entries"]:
        request = entry["request"]
        path = urlsplit(request["url"]).path
        sent[path] = sent.get(path, "") + request.get("postData", {}).get("text", "")
    hostile = {
        "NaN or Infinity": re.compile(r'(?<![\w"])(?:NaN|-?Infinity)\b'),
        "a lone surrogate": re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"),
        "a control character": re.compile(r"\\u00[01][0-9a-fA-F]|\\[nrt]"),
        "digits of another script": re.compile(r"\\u(?:066|06f|096|09e|0e5|ff1)[0-9a-f]|\\ud835\\udf[cdef]"),
    }
    ai_bodies = sent.get("/api/ai-response", "") + sent.get("/api/ai-response/enqueue", "")
    for path, bodies in [
        *(
            (path, sent.get(path, ""))
            for path in ("/api/schedule-sms", "/api/schedule-sms/bulk", "/api/schedule-email")
        ),
        ("/api/ai-response (and its alias)", ai_bodies),
    ]:
        for kind, pattern in hostile.items():
            assert pattern.search(bodies), f"no {kind} was sent to {path}"
