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


@register.inclusion_tag("dashboard/_chart.html")
def hourly_chart(points: list[dict], title: str) -> dict:
    """Server-rendered SVG bar chart of sent (up) and failed (down) per hour.

    `points`: [{hour, sent, failed}, ...] oldest first. Geometry is computed here so the template only
    places rectangles (no inline styles: colours come from CSS classes).
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
                "title": f"{p['hour']:%b %d %H:00} UTC — {p['sent']} sent, {p['failed']} failed",
            }
        )
        if p["hour"].hour % 6 == 0:
            labels.append(
                {
                    "x": round(x + bar_w / 2, 2),
                    "text": f"{p['hour']:%H:00}" if p["hour"].hour else f"{p['hour']:%b %d}",
                }
            )
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
