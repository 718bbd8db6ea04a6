"""Number and text formatting shared by every renderer.

Markdown, HTML and the terminal show exactly the same digits for the same value (the JSON keeps
full precision), and user text is escaped the same way everywhere.
"""

from __future__ import annotations

import html
import json
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


def fmt_tally(value: Any) -> str:
    """A count shown as a count: ``12,345``; a mean over seeds keeps one decimal (``12.5``).

    Missing values are an em dash.
    """
    if not is_number(value):
        return MISSING
    v = float(value)
    return f"{round(v):,}" if v == round(v) else f"{v:,.1f}"


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


#: C0/C1 control characters and the Unicode bidirectional overrides (they reorder what a
#: reader sees: "Trojan source").
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible_text(text: Any) -> str:
    r"""One line of text with control characters shown as escapes (``\x1b``), never obeyed.

    Newlines and tabs become spaces; other control characters (terminal escape sequences) and
    bidirectional overrides are written as ``\xNN``/``\uNNNN`` so they cannot move the
    cursor, recolour a terminal or reorder text.
    """
    s = "" if text is None else str(text)
    s = s.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")

    def show(m: re.Match[str]) -> str:
        code = ord(m.group(0))
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _CONTROL.sub(show, s)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~#!])")


def md_escape(text: Any) -> str:
    r"""Escape text for Markdown prose and table cells (GitHub-flavoured Markdown).

    ``<``, ``>`` and ``&`` become HTML entities (GitHub renders raw HTML in Markdown), Markdown
    punctuation (``\ ` * _ [ ] | ~ # !``) gets a backslash, newlines become spaces and control
    characters are shown as escapes, so a value can neither add markup nor leave its cell.
    """
    s = visible_text(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return " ".join(s.split())


def md_code(text: Any, *, in_table: bool = True) -> str:
    r"""A Markdown code span showing ``text`` literally (no backslash escapes inside).

    The fence is one backtick longer than the longest run of backticks in the text; padding
    spaces keep a leading or trailing backtick apart from the fence. In a table cell (GitHub
    splits cells on ``|`` even inside code spans) a ``|`` is written ``\|``, which GitHub shows
    as ``|``.
    """
    s = " ".join(visible_text(text).split())
    runs = [len(r) for r in re.findall(r"`+", s)]
    fence = "`" * (max(runs, default=0) + 1)
    if in_table:
        s = s.replace("|", "\\|")
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def md_fence(text: Any, info: str = "") -> list[str]:
    """Lines of a fenced code block holding ``text`` literally (fence longer than any inside)."""
    s = "" if text is None else str(text).strip("\n")
    runs = [len(r) for r in re.findall(r"`{3,}", s)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return [f"{fence}{info}", *[visible_text(line) for line in s.splitlines()], fence]


#: Characters percent-encoded in Markdown link targets (they end the target or split a cell).
_URL_UNSAFE = {c: f"%{ord(c):02X}" for c in " ()[]<>|`\\\"'"}


def md_link(text: Any, url: Any) -> str:
    """Markdown link if ``url`` is a safe http(s) URL, else the escaped text alone."""
    label = md_escape(text)
    target = safe_url(url)
    if not target:
        return label
    target = "".join(_URL_UNSAFE.get(c, c) for c in target)
    return f"[{label}]({target})"


_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: Any) -> str:
    """A text cell for CSV: a leading ``= + - @`` (a spreadsheet formula) gets a ``'`` prefix.

    Quoting of commas, quotes and newlines is the :mod:`csv` writer's job; this only defuses
    formula injection (OWASP "CSV injection"). Numbers are written as numbers, not through this.
    """
    s = visible_text(value)
    return "'" + s if s.startswith(_CSV_FORMULA) else s


def json_text(data: Any) -> str:
    r"""Diff-friendly JSON (sorted keys, two-space indent) safe to serve anywhere.

    ``<``, ``>`` and ``&`` are written as ``\u003c``/``\u003e``/``\u0026`` (and U+2028/U+2029
    escaped), so the text stays inert even if a browser sniffs it as HTML or it is pasted into
    a page; :func:`json.loads` gives back the same strings.
    """
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text + "\n"


def direction_word(direction: str) -> str:
    """``higher is better`` / ``lower is better``."""
    return "lower is better" if direction == "lower" else "higher is better"
