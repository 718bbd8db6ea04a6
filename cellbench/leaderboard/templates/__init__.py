"""Jinja2 templates and static assets of the leaderboard site, shared with other cellbench pages.

Files (package data)::

    base.html        the page layout: CSP, stylesheet, the one script, skip link, header, footer
    macros.html      small pieces used by the pages (links, sortable headers, number cells)
    board.html       one leaderboard
    index.html       every leaderboard
    card.html        a dataset card (included by board and index pages)
    glossary.html    metric names, units and definitions
    assets/style.css the stylesheet (no web fonts, no external resources)
    assets/leaderboard.js  sortable tables (vanilla JavaScript, reorders rows, writes no markup)

Every template is rendered with autoescaping on (:func:`environment`): any value printed with
``{{ ... }}`` is HTML-escaped, so user text (entry names, authors, URLs) can never become markup.
Only values explicitly wrapped with :class:`markupsafe.Markup` are inserted as is; the leaderboard
code never wraps user text. Links to user URLs go through the ``safe_url`` filter (http(s) only).

The pages work under a strict Content-Security-Policy (``CSP``): no inline ``<script>``, no
``style=`` attributes, no event-handler attributes; styles and the script come from files under
``assets/``. A page that extends ``base.html`` must keep to that (or send its own policy with a
nonce or hash for anything inline, and document it).

How to extend the layout (e.g. the challenge server's pages)::

    from cellbench.leaderboard.templates import copy_assets, environment

    env = environment()                      # autoescape on, StrictUndefined
    html = env.from_string('''
        {% extends "base.html" %}
        {% block title %}Submit{% endblock %}
        {% block content %}<h1>Submit</h1><p>{{ message }}</p>{% endblock %}
    ''').render(root="", message=user_text)  # root: relative path from the page to assets/
    copy_assets(site_folder)                 # writes site_folder/assets/style.css and the script

Blocks of ``base.html``: ``title`` (text of ``<title>``), ``head`` (extra ``<link>``/``<meta>``),
``header_links`` (links after the site name in the header; default: the metric glossary),
``nav`` (breadcrumb line), ``content`` (inside ``<main id="content">``), ``footer``. Variables it
reads: ``root`` (required; ``""`` for a page at the site root, ``"../../../"`` for a board page)
and, optionally, ``csp`` (defaults to :data:`CSP`) and ``version``. A server that serves the
assets elsewhere sets ``root`` to the URL prefix that holds ``assets/`` (e.g. ``"/static/"``).
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from cellbench._version import __version__

#: Content-Security-Policy of every page (also sent as a ``<meta>`` tag by ``base.html``).
CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "base-uri 'none'; form-action 'none'"
)
#: Static files copied to ``<site>/assets/``.
ASSETS = ("style.css", "leaderboard.js")


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the site: package templates, autoescape on, strict undefined.

    The environment carries the number and URL filters of
    :mod:`cellbench.leaderboard.formatting` (``fmt_value``, ``fmt_mean_std``, ``fmt_interval``,
    ``fmt_count``, ``fmt_resource``, ``safe_url``, ``data_value``) and the globals ``CSP`` and
    ``version``.
    """
    from cellbench.leaderboard import formatting as f

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cellbench.leaderboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        fmt_value=f.fmt_value,
        fmt_mean_std=f.fmt_mean_std,
        fmt_interval=f.fmt_interval,
        fmt_count=f.fmt_count,
        fmt_resource=f.fmt_resource,
        safe_url=f.safe_url,
        data_value=f.data_value,
    )
    env.globals.update(CSP=CSP, version=__version__)
    return env


def render(template: str, **context: Any) -> str:
    """Render one template of the package with ``context``."""
    return environment().get_template(template).render(**context)


def copy_assets(site: str | Path) -> Path:
    """Copy the stylesheet and script into ``<site>/assets/`` (created if needed).

    Returns:
        The assets folder.
    """
    folder = Path(site) / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    package = resources.files("cellbench.leaderboard") / "templates" / "assets"
    for name in ASSETS:
        data = (package / name).read_bytes()
        target = folder / name
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
    return folder
