"""Number and text formatting shared by every renderer.

Markdown, HTML and the terminal show exactly the same digits for the same value (the JSON keeps
full precision), and user text is escaped the same way everywhere.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any
from urllib.parse import urlsplit

MISSING = "—"


def is_number(value: Any) -> bool:
    """True for a finite int/float (bools excluded)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def is_infinite(value: Any) -> bool:
    """True for ±inf (e.g. the PSNR of a perfect prediction)."""
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isinf(float(value))
    )


def json_number(value: Any) -> Any:
    """A value for JSON: NaN as ``None``, ±inf as ``"inf"``/``"-inf"`` (as score reports do)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if is_infinite(value):
        return "inf" if value > 0 else "-inf"
    return value


def fmt_value(value: Any) -> str:
    """Format one metric value: 4 decimals, or 4 significant digits for very large/small ones.

    Missing values (None, NaN) are shown as an em dash.
    """
    if is_infinite(value):
        return "∞" if float(value) > 0 else "−∞"
    if not is_number(value):
        return MISSING
    v = float(value)
    if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
        return f"{v:.4g}"
    return f"{v:.4f}"


def fmt_mean_std(mean: Any, std: Any) -> str:
    """``mean ± std``, or just the mean when there is no spread (a single seed)."""
    if not is_number(mean):
        return fmt_value(mean)
    if not is_number(std):
        return fmt_value(mean)
    return f"{fmt_value(mean)} ± {fmt_value(std)}"


def fmt_interval(low: Any, high: Any) -> str:
    """``[low, high]`` or an em dash."""
    if not (is_number(low) and is_number(high)):
        return MISSING
    return f"[{fmt_value(low)}, {fmt_value(high)}]"


def fmt_count(value: Any) -> str:
    """Parameter counts as ``1.2M``/``35.0k``/``812``; missing as an em dash."""
    if not is_number(value):
        return MISSING
    v = float(value)
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{int(v)}"


def fmt_resource(value: Any, digits: int = 1) -> str:
    """Runtime seconds / memory MB with fixed decimals, or an em dash when not measured."""
    if not is_number(value):
        return MISSING
    return f"{float(value):.{digits}f}"


def data_value(value: Any) -> str:
    """Sort key of a number cell (``data-value``): full precision, JavaScript's infinities.

    Missing values give an empty string (they sort last).
    """
    if is_number(value):
        return repr(float(value))
    if is_infinite(value):
        return "Infinity" if float(value) > 0 else "-Infinity"  # what JavaScript parses
    return ""


def safe_url(url: Any) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else an empty string.

    Anything else (``javascript:``, ``data:``, relative paths, control characters) is refused so
    that user-supplied links can never run script or point inside the site.
    """
    if not isinstance(url, str):
        return ""
    url = url.strip()
    if not url or any(ord(c) < 33 or ord(c) == 127 for c in url):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    return url


def esc(text: Any) -> str:
    """HTML-escape any value's string form (quotes included)."""
    return html.escape("" if text is None else str(text), quote=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: Any) -> str:
    """Escape text for a Markdown table cell.

    ``<``, ``>`` and ``&`` become HTML entities (GitHub renders raw HTML in Markdown), Markdown
    punctuation gets a backslash, and newlines become spaces.
    """
    s = "" if text is None else str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return " ".join(s.split())


def md_link(text: Any, url: Any) -> str:
    """Markdown link if ``url`` is a safe http(s) URL, else the escaped text alone."""
    label = md_escape(text)
    target = safe_url(url)
    if not target:
        return label
    target = target.replace("(", "%28").replace(")", "%29").replace(" ", "%20")
    return f"[{label}]({target})"


def direction_word(direction: str) -> str:
    """``higher is better`` / ``lower is better``."""
    return "lower is better" if direction == "lower" else "higher is better"
