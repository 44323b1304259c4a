"""Templates and the filters that make numbers readable: USD that says what it leaves out, tokens with
their unit, durations, and times as ``<time>`` elements the page shows in the viewer's zone."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from vital_callbacks.core.money import format_usd


def usd(amount: Decimal | None, unpriced: int = 0) -> str:
    """``$0.0123``, ``≥ $1.20 (3 unpriced)``, ``unpriced (3 calls)``: never an unpriced call as $0."""
    return format_usd(amount, unpriced)


def tokens(count: int | None) -> str:
    return "-" if count is None else f"{count:,} tok"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def when(value: datetime | None) -> Markup:
    """A ``<time>``: UTC in the markup and on hover, the viewer's local time once the script runs."""
    if value is None:
        return Markup("-")
    utc = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    iso = utc.isoformat().replace("+00:00", "Z")
    return Markup(f'<time datetime="{escape(iso)}" title="{escape(text)}">{escape(text)}</time>')


def query(params: dict[str, Any], **changes: Any) -> str:
    """The page's query string with ``changes`` (a ``None`` drops a key): links keep their filters."""
    merged = {**params, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


def environment() -> Environment:
    folder = resources.files("vital_callbacks.server.ui").joinpath("templates")
    env = Environment(loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(usd=usd, tokens=tokens, seconds=seconds, when=when)
    env.globals.update(query=query)
    return env
