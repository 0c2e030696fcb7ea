"""Dashboard pages stay up, and their links open the right page, whatever workspace ids older rows
hold (written before the API refused them): line breaks, non-ASCII, `../`, `%`, `?`, `#`, dots,
surrounding spaces. (Not NUL: PostgreSQL cannot store it in a text column, so no row holds one.)"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urljoin, urlsplit

import pytest
from django.test import Client

from messaging.models import SandboxReceipt, Status
from tests import factories

ODD_IDS = [
    "line\nbreak",
    "cr\r\nX-Injected: 1",
    "bücher ✓",
    "工作区",
    "../admin/",
    "../../overview/live",
    "..",
    ".",
    "50%",
    "%2e%2e",
    "a?b=c#d",
    "back\\slash",
    " padded ",
    "bidi\u202eid",
]
WORKSPACE_LINK = re.compile(r'href="([^"]*/workspaces/[^"]*)"')


@pytest.fixture
def odd_rows(db):
    """A workspace per odd id (inserted with the ORM, as older rows hold them), each with a sent, a
    failed and a scheduled message."""
    rows = {}
    for external_id in ODD_IDS:
        workspace = factories.workspace(external_id)
        rows[external_id] = {
            "workspace": workspace,
            "sent": factories.message(workspace),
            "failed": factories.message(workspace, status=Status.FAILED, error_kind="http_503"),
            "scheduled": factories.message(workspace, status=Status.SCHEDULED),
        }
    return rows


def _workspace_links(html: str) -> list[str]:
    return [unescape(href) for href in WORKSPACE_LINK.findall(html)]


def _opens_workspace(staff: Client, page_url: str, href: str, external_id: str) -> None:
    """Resolve `href` as a browser does (dot segments removed) and check it opens that workspace."""
    absolute = urljoin(f"http://testserver{page_url}", href)
    path = urlsplit(absolute).path
    assert path.startswith("/workspaces/"), (href, path)
    assert not re.search(r"/\.{1,2}(/|$)|%2e", path, re.IGNORECASE), (href, path)
    response = staff.get(absolute)
    assert response.status_code == 200, (href, response.status_code)
    assert response.context["workspace"].external_id == external_id


def test_the_overview_and_its_live_fragment_answer_and_link_each_workspace_to_its_own_page(staff, odd_rows):
    for url in ("/", "/overview/live", "/?window=7d"):
        response = staff.get(url)
        assert response.status_code == 200, url
        links = _workspace_links(response.content.decode())
        assert len(links) == len(ODD_IDS), links
    opened = set()
    for href in links:
        response = staff.get(urljoin("http://testserver/", href))
        assert response.status_code == 200, href
        opened.add(response.context["workspace"].external_id)
    assert opened == set(ODD_IDS)


def test_the_message_list_message_page_and_scheduled_page_answer_and_link_the_right_workspace(
    staff, odd_rows
):
    listing = staff.get("/messages/")
    assert listing.status_code == 200
    assert len(_workspace_links(listing.content.decode())) == 3 * len(ODD_IDS)
    scheduled = staff.get("/scheduled/")
    assert scheduled.status_code == 200
    assert len(_workspace_links(scheduled.content.decode())) == len(ODD_IDS)
    for external_id, row in odd_rows.items():
        for kind in ("sent", "failed", "scheduled"):
            url = f"/messages/{row[kind].pk}/"
            response = staff.get(url)
            assert response.status_code == 200, (external_id, kind)
            (href,) = _workspace_links(response.content.decode())
            _opens_workspace(staff, url, href, external_id)
            assert staff.get(f"/messages/{row[kind].pk}/live").status_code == 200


def test_each_workspace_page_answers_in_every_window_with_a_filter_link_to_its_messages(staff, odd_rows):
    for href in _workspace_links(staff.get("/").content.decode()):
        page = urljoin("http://testserver/", href)
        for window in ("", "?window=7d", "?window=all"):
            response = staff.get(page + window)
            assert response.status_code == 200, (href, window)
        external_id = response.context["workspace"].external_id
        # Its "all messages" link lists exactly this workspace's three messages.
        (query,) = re.findall(r'href="/messages/\?workspace=([^"&]*)"', response.content.decode())
        listing = staff.get("/messages/?workspace=" + unescape(query))
        assert listing.status_code == 200
        shown = {m.workspace.external_id for m in listing.context["page"].items}
        assert shown == {external_id}, (external_id, shown)


def test_the_sandbox_page_answers_for_any_idempotency_key_a_client_sent(staff):
    keys = ["a/b", "../../admin/", "日本", "x" * 255, "12345678-1234-5678-1234-567812345678"]
    for key in keys:
        SandboxReceipt.objects.create(
            endpoint="sms", path="/sandbox/sms/send-sms", idempotency_key=key, payload={}, response_status=200
        )
    response = staff.get("/sandbox/received/")
    assert response.status_code == 200
    # Only the key that can be a message id is a link.
    links = re.findall(r'href="(/messages/[^"]+)"', response.content.decode())
    assert links == [f"/messages/{keys[-1]}/"], links


@pytest.mark.parametrize("before", ["²", "٣", "99999999999999999999999999", "-1", "abc"])
def test_the_sandbox_page_answers_for_any_cursor(staff, before):
    SandboxReceipt.objects.create(
        endpoint="sms", path="/sandbox/sms/send-sms", payload={}, response_status=200
    )
    assert staff.get(f"/sandbox/received/?before={before}").status_code == 200
