"""Ingress limits: requests per API key per second, body size, metadata size, JSON nesting depth."""

from __future__ import annotations

import json
import time

import pytest

from messaging import queues
from messaging.http import MAX_JSON_DEPTH, json_depth
from messaging.models import Message
from messaging.workspaces import api_key_create
from tests.conftest import ApiClient

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(db, settings):
    settings.API_RATE_LIMIT_PER_KEY = "3/second"
    busy = ApiClient(api_key_create(name="busy", all_workspaces=True)[1])
    quiet = ApiClient(api_key_create(name="quiet", all_workspaces=True)[1])
    statuses = [busy.post("/api/schedule-sms", GOOD).status_code for _ in range(3)]
    assert statuses == [202, 202, 202]

    refused = busy.post("/api/schedule-sms", GOOD)
    assert refused.status_code == 429
    assert refused.json()["success"] is False
    assert "3/second" in refused.json()["message"]
    retry_after = int(refused["Retry-After"])
    # A one-second window, read in slots of a tenth of it, frees a slot within 1.1 s.
    assert 1 <= retry_after <= 2
    assert busy.get("/api/queues").status_code == 429  # every endpoint counts against the key
    assert Message.objects.count() == 3

    assert quiet.post("/api/schedule-sms", GOOD).status_code == 202
    time.sleep(retry_after + 0.05)
    assert busy.post("/api/schedule-sms", GOOD).status_code == 202


def test_requests_without_a_valid_key_are_not_counted_against_a_key(db, settings):
    settings.API_RATE_LIMIT_PER_KEY = "2/second"
    api = ApiClient(api_key_create(name="crm", all_workspaces=True)[1])
    for _ in range(5):
        assert ApiClient("mq_deadbeef_wrong").post("/api/schedule-sms", GOOD).status_code == 401
    assert api.post("/api/schedule-sms", GOOD).status_code == 202


def test_the_rate_limit_lets_requests_through_while_redis_is_down(db, settings, caplog):
    settings.API_RATE_LIMIT_PER_KEY = "1/second"
    api = ApiClient(api_key_create(name="crm", all_workspaces=True)[1])
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_SOCKET_TIMEOUT = 0.2
    queues.reset_connection()
    try:
        for _ in range(3):
            assert api.post("/api/schedule-sms", GOOD).status_code == 202
    finally:
        queues.reset_connection()
    assert "rate limit not checked" in caplog.text
    assert Message.objects.count() == 3


def test_a_malformed_rate_setting_stops_the_process_at_start(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DJANGO_ENV": "test", "API_RATE_LIMIT_PER_KEY": "lots"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "API_RATE_LIMIT_PER_KEY" in result.stderr


def test_a_body_over_the_size_limit_gets_413_before_it_is_parsed(api, settings):
    settings.API_MAX_BODY_BYTES = 500
    response = api.post("/api/schedule-sms", raw=b"{" + b" " * 600 + b"}")
    assert response.status_code == 413
    assert "500 bytes" in response.json()["message"]


def test_metadata_over_the_byte_limit_is_a_400_naming_metadata(api, settings):
    settings.API_MAX_METADATA_BYTES = 1000
    response = api.post("/api/schedule-sms", {**GOOD, "metadata": {"note": "x" * 1000}})
    assert response.status_code == 400
    assert "bytes" in response.json()["errors"]["metadata"][0]
    ok = api.post("/api/schedule-sms", {**GOOD, "metadata": {"note": "x" * 900}})
    assert ok.status_code == 202
    assert Message.objects.count() == 1


def test_metadata_with_too_many_keys_or_levels_is_a_400(api):
    too_many = {f"k{i}": i for i in range(51)}
    assert api.post("/api/schedule-sms", {**GOOD, "metadata": too_many}).json()["errors"]["metadata"]
    deep: dict = {"leaf": 1}
    for _ in range(6):
        deep = {"d": deep}
    response = api.post("/api/schedule-sms", {**GOOD, "metadata": deep})
    assert response.status_code == 400
    assert "levels" in response.json()["errors"]["metadata"][0]


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 5000, 100_000])
def test_a_deeply_nested_body_is_a_400_not_a_500(api, depth):
    raw = '{"metadata": ' + "[" * depth + "]" * depth + "}"
    response = api.post("/api/schedule-sms", raw=raw.encode())
    assert response.status_code == 400, response.content[:200]
    assert response.json()["message"] == f"Request body is nested more than {MAX_JSON_DEPTH} levels deep."
    assert Message.objects.count() == 0


def test_a_body_nested_exactly_to_the_limit_is_parsed(api):
    inner = "[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)
    body = json.loads('{"extra": {"x": ' + inner + "}}")
    assert json_depth(body) == MAX_JSON_DEPTH
    response = api.post("/api/schedule-sms", {**GOOD, **body})
    assert response.status_code == 202


def test_json_depth_counts_objects_and_arrays():
    assert json_depth(1) == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth([[], [[]]]) == 3


def test_an_unknown_api_path_answers_json_404(api):
    response = api.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"success": False, "message": "Not found."}
