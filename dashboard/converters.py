"""Path converter for workspace IDs in dashboard URLs (`/workspaces/<workspace_id:external_id>/`).

A workspace ID is whatever a client sent (rows written before the identifier rules in
messaging.validation may hold line breaks, `/`, `%`, `..` or non-ASCII), and a link to its page must
open that page and no other. Django's `reverse` percent-encodes the path once, but leaves `/` alone
and cannot encode a line break for the default `path` converter (its pattern stops at one: a 500 for
every page that links the workspace), and a browser resolves `..` segments before sending the
request (`/workspaces/../` opens another page).

So `to_url` escapes, as `%XX` of its UTF-8 bytes, every character that would change the path's
meaning: `%` itself, `/`, `\\`, `?`, `#` and every non-printable character, plus each `.` of an ID
made only of dots. `reverse` then quotes that `%` once more (`%2F` becomes `%252F`), so the browser
sees one opaque segment; the server decodes the path once (WSGI) and `to_python` decodes the second
layer. IDs of ordinary characters (`66338`, `acme-eu`, `bücher`) keep their readable URL, and old
hand-typed URLs such as `/workspaces/66338/` still open.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

_ESCAPED = frozenset("%/\\?#")


class WorkspaceIdConverter:
    """Any non-empty workspace ID, reversibly encoded as one URL path segment (see the module doc)."""

    regex = ".+"

    def to_python(self, value: str) -> str:
        """The workspace ID from the path as WSGI decoded it once."""
        return unquote(value)

    def to_url(self, value: str) -> str:
        """The ID with `%`, `/`, `\\`, `?`, `#`, non-printable characters and dot-only IDs escaped.

        Raises ValueError for an empty ID (no page has one; `reverse` reports NoReverseMatch).
        """
        value = str(value)
        if not value:
            raise ValueError("empty workspace ID")
        if not value.strip("."):
            return value.replace(".", "%2E")
        return "".join(
            quote(char, safe="") if char in _ESCAPED or not char.isprintable() else char for char in value
        )
