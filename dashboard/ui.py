"""Small building blocks shared by the pages."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from .client import ApiError
from .context import Context

PHASES = ("Pending", "Training", "AwaitingLabels", "Succeeded", "Failed", "Suspended")


def error_box(error: Exception | str, what: str = "") -> html.Div:
    text = str(error)
    if isinstance(error, ApiError) and error.status == 401:
        text = "You are not signed in (or your token expired): sign in again."
    return html.Div([html.Strong(f"{what}: " if what else ""), text], className="error-box", role="alert")


def phase_badge(phase: str, suspended: bool = False) -> html.Span:
    shown = "Suspended" if suspended and phase not in ("Succeeded", "Failed") else phase
    return html.Span(shown, className=f"phase {shown}")


def card(title: str | None, *children: Any, **kwargs: Any) -> html.Div:
    body = ([html.H3(title)] if title else []) + list(children)
    return html.Div(body, className=f"card {kwargs.pop('className', '')}".strip(), **kwargs)


def kbd(key: str) -> html.Kbd:
    return html.Kbd({"ArrowLeft": "←", "ArrowRight": "→", "Escape": "Esc"}.get(key, key))


def experiment_tabs(ctx: Context, name: str, current: str) -> html.Nav:
    pages = [("label", "Label"), ("map", "Batch map"), ("performance", "Performance")]
    return html.Nav([dcc.Link(title, href=ctx.experiment_href(name, page), className="current" if page == current else "",
                              id=f"tab-{page}")
                     for page, title in pages], className="tabs")


def fmt_estimate(value: Any, low: Any, high: Any) -> str:
    if value is None:
        return "—"
    text = f"{float(value):.3f}"
    if low is not None and high is not None:
        text += f" [{float(low):.3f}, {float(high):.3f}]"
    return text
