"""Template helpers for the dashboard: numbers, percentages, durations, status badges, SVG charts."""

from __future__ import annotations

import json

from django import template
from django.utils.html import format_html

from messaging.reporting.selectors import error_label

register = template.Library()


@register.filter
def percent(value: float | None) -> str:
    """0.9876 -> "98.8 %"; None -> "–"."""
    if value is None:
        return "–"
    return f"{value * 100:.1f} %"


@register.filter
def ms(value: int | None) -> str:
    """Milliseconds for people: 84 -> "84 ms", 1530 -> "1.53 s"; None -> "–"."""
    if value is None:
        return "–"
    if value < 1000:
        return f"{value} ms"
    return f"{value / 1000:.3g} s"


@register.filter
def count(value: int | None) -> str:
    """An integer with thin thousands separators; None -> "–"."""
    if value is None:
        return "–"
    return f"{value:,}".replace(",", "\u202f")


@register.filter
def error_kind(value: str) -> str:
    return error_label(value)


@register.simple_tag
def status_badge(status: str) -> str:
    """A coloured badge for a message status."""
    return format_html('<span class="badge badge-{}">{}</span>', status, status)


# Per chart bucket (reporting.numbers.Chart.bucket): the strftime format of a bar's start in its
# tooltip, and whether the bar with that start gets an axis label.
_BUCKET_FORMATS = {"minute": "%b %d %H:%M", "hour": "%b %d %H:00", "day": "%b %d", "7 days": "%b %d"}


def _axis_label(start, bucket: str, index: int, count: int) -> str | None:
    if bucket == "minute":
        return f"{start:%H:%M}" if start.minute % 10 == 0 else None
    if bucket == "hour":
        if start.hour % 6:
            return None
        return f"{start:%H:00}" if start.hour else f"{start:%b %d}"
    return f"{start:%b %d}" if index % max(1, count // 8) == 0 else None


@register.inclusion_tag("dashboard/_chart.html")
def bucket_chart(points: list[dict], title: str, bucket: str = "hour") -> dict:
    """Server-rendered SVG bar chart of sent (up) and failed (down) per time bucket.

    `points`: [{start, sent, failed}, ...] oldest first (reporting.numbers.Chart.series); `bucket`:
    "minute", "hour", "day" or "7 days". Geometry is computed here so the template only places
    rectangles (no inline styles: colours come from CSS classes).
    """
    width, height, pad_left, pad_bottom, pad_top = 1200, 150, 44, 22, 10
    n = max(len(points), 1)
    plot_w = width - pad_left - 8
    plot_h = height - pad_bottom - pad_top
    peak = max([p["sent"] + p["failed"] for p in points] + [1])
    scale = plot_h / peak
    slot = plot_w / n
    bar_w = max(slot * 0.75, 1)
    bars = []
    labels = []
    when_format = _BUCKET_FORMATS.get(bucket, "%b %d %H:%M")
    for i, p in enumerate(points):
        x = pad_left + i * slot + (slot - bar_w) / 2
        sent_h = p["sent"] * scale
        failed_h = p["failed"] * scale
        base = pad_top + plot_h
        bars.append(
            {
                "x": round(x, 2),
                "w": round(bar_w, 2),
                "sent_y": round(base - sent_h, 2),
                "sent_h": round(sent_h, 2),
                "failed_y": round(base - sent_h - failed_h, 2),
                "failed_h": round(failed_h, 2),
                "title": f"{p['start']:{when_format}} UTC ({bucket}) — {p['sent']} sent, {p['failed']} failed",
            }
        )
        text = _axis_label(p["start"], bucket, i, len(points))
        if text:
            labels.append({"x": round(x + bar_w / 2, 2), "text": text})
    totals = {"sent": sum(p["sent"] for p in points), "failed": sum(p["failed"] for p in points)}
    return {
        "title": title,
        "width": width,
        "height": height,
        "bars": bars,
        "labels": labels,
        "peak": peak,
        "axis_y": pad_top + plot_h,
        "label_y": height - 6,
        "pad_left": pad_left,
        "pad_top": pad_top,
        "mid_y": round(pad_top + plot_h / 2, 2),
        "mid_value": peak / 2,
        "right": width - 8,
        "totals": totals,
    }


@register.filter
def get_item(mapping: dict, key: str):
    """mapping[key] in a template (None when missing)."""
    return mapping.get(key) if mapping else None


@register.filter
def pretty_json(value) -> str:
    """Indented JSON for display (autoescaped by the template)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


@register.filter
def preview(message) -> str:
    """A one-line preview of a message's content: SMS text, email subject, or the AI request text."""
    text = message.subject or message.body or message.response_text or ""
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:79] + "…"
