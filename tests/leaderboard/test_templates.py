"""The shared Jinja2 layout: autoescaped, CSP-friendly, extendable by other pages."""

from cellbench.leaderboard.templates import ASSETS, CSP, copy_assets, environment
from tests.leaderboard.site_fixture import HOSTILE


def test_a_page_extending_base_escapes_values_and_keeps_the_csp(tmp_path):
    page = (
        environment()
        .from_string(
            '{% extends "base.html" %}{% block title %}{{ who }}{% endblock %}'
            "{% block content %}<p>{{ who }}</p>{% endblock %}"
        )
        .render(root="/static/", who=HOSTILE)
    )
    assert "<script>window" not in page and "&lt;script&gt;window.__pwned=1" in page
    assert 'onerror="' not in page
    assert page.count("<script") == 1 and 'src="/static/assets/leaderboard.js"' in page
    assert 'href="/static/assets/style.css"' in page and "style=" not in page
    assert "Content-Security-Policy" in page and CSP.replace("'", "&#39;") in page
    assert '<main id="content"' in page and 'href="#content"' in page  # skip link
    folder = copy_assets(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(ASSETS)
