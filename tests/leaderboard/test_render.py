import json
import re
from html.parser import HTMLParser
from pathlib import Path

import fsspec
import numpy as np
import pytest
from matplotlib.image import imread

from cellbench.leaderboard import BoardKey, LeaderboardStore, publish, publish_to, push
from cellbench.leaderboard.formatting import (
    fmt_count,
    fmt_interval,
    fmt_mean_std,
    fmt_value,
    md_escape,
    safe_url,
)
from cellbench.leaderboard.site import PublishError
from tests.leaderboard.helpers import make_entry
from tests.leaderboard.site_fixture import CONFUSION, HOSTILE, build_store

INST = BoardKey("toy", "1.0", "instance-segmentation", "test")
CLS = BoardKey("toy", "1.0", "classification", "test")


class TableParser(HTMLParser):
    """Collect the cells (text and data-value) of the table with a given id."""

    def __init__(self, table_id: str):
        super().__init__()
        self.table_id = table_id
        self.depth = 0
        self.rows: list[list[tuple[str, str | None]]] = []
        self.cell: list[str] | None = None
        self.value: str | None = None
        self.in_body = False
        self.scripts = 0
        self.attrs_seen: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs_seen += [(k, v or "") for k, v in attrs]
        if tag == "script":
            self.scripts += 1
        if tag == "table" and a.get("id") == self.table_id:
            self.depth = 1
        elif tag == "table" and self.depth:
            self.depth += 1
        if not self.depth:
            return
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag == "td" and self.in_body:
            self.cell, self.value = [], a.get("data-value")

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag == "td" and self.cell is not None:
            self.rows[-1].append(("".join(self.cell).strip(), self.value))
            self.cell = None
        elif tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.depth -= 1

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def html_rows(path: Path, table_id: str = "leaderboard") -> tuple[list, TableParser]:
    parser = TableParser(table_id)
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.rows, parser


def md_table(text: str, header_start: str, after: str = "") -> list[list[str]]:
    """Rows of the first Markdown table whose header starts with ``header_start`` (after the
    first line starting with ``after``, when given)."""
    lines = text.splitlines()
    first = next(k for k, line in enumerate(lines) if line.startswith(after)) if after else 0
    i = next(k for k, line in enumerate(lines) if k >= first and line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip() for c in cells])
    return rows


def four(x: float) -> str:
    return "%.4f" % x  # noqa: UP031 - deliberately independent of the code under test


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    store = build_store(root)
    out = tmp_path_factory.mktemp("site")
    result = publish(store, out, overlays=False)
    return store, out, result


def test_formatting_by_hand():
    assert fmt_value(0.81) == "0.8100"
    assert fmt_value(12345.6) == "1.235e+04"
    assert fmt_value(float("nan")) == "—" and fmt_value(None) == "—"
    assert fmt_mean_std(0.5, 0.01234) == "0.5000 ± 0.0123"
    assert fmt_mean_std(0.5, float("nan")) == "0.5000"
    assert fmt_interval(0.1, 0.2) == "[0.1000, 0.2000]"
    assert fmt_count(7_800_000) == "7.8M" and fmt_count(999) == "999"
    assert md_escape("a|b <i>") == "a\\|b &lt;i&gt;"
    for bad in ("javascript:alert(1)", "data:text/html,x", "//evil.org", "/rel", "http://"):
        assert safe_url(bad) == ""
    assert safe_url(" https://example.org/x ") == "https://example.org/x"


def test_site_layout(site):
    _, out, result = site
    assert result.boards == [CLS, INST]
    for rel in (
        "index.html",
        "README.md",
        "leaderboards.json",
        "assets/style.css",
        "assets/leaderboard.js",
    ):
        assert (out / rel).is_file(), rel
    for key in (CLS, INST):
        for rel in ("index.html", "README.md", "leaderboard.json"):
            assert (out / key.path / rel).is_file()
    index = json.loads((out / "leaderboards.json").read_text())
    assert [i["path"] for i in index] == [CLS.path, INST.path]
    assert index[1]["leader"] == HOSTILE and index[1]["leader_value"] == pytest.approx(0.83)


def test_numbers_agree_across_json_markdown_and_html(site):
    _, out, _ = site
    folder = out / INST.path
    data = json.loads((folder / "leaderboard.json").read_text())
    rows = data["rows"]
    assert [r["name"] for r in rows] == [HOSTILE, "StarDist", "Cellpose"]
    # hand-computed: seeds 0.80, 0.83, 0.86 -> mean 0.83, std 0.03; intervals value ± 0.05
    head = rows[0]["headline"]
    assert head["mean"] == pytest.approx(0.83) and head["std"] == pytest.approx(0.03)
    assert head["ci_low"] == pytest.approx(0.78) and head["ci_high"] == pytest.approx(0.88)
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["overlaps_above"] for r in rows] == [False, True, False]
    assert rows[0]["runtime_s"]["mean"] == pytest.approx(3.0)

    md = (folder / "README.md").read_text()
    md_rows = md_table(md, "| rank | entry |")
    html, _parser = html_rows(folder / "index.html")
    assert len(md_rows) == len(html) == len(rows)
    for r, m, h in zip(rows, md_rows, html, strict=True):
        mean, std = r["headline"]["mean"], r["headline"]["std"]
        shown = four(mean) + (f" ± {four(std)}" if std is not None else "")
        interval = f"[{four(r['headline']['ci_low'])}, {four(r['headline']['ci_high'])}]"
        assert m[3] == shown and m[4] == interval and m[5] == str(r["n_seeds"])
        assert h[3][0] == shown and h[4][0] == interval
        assert float(h[3][1]) == mean  # full precision in data-value
        assert m[0].lstrip("≈=") == h[0][0].lstrip("≈=") == str(r["rank"])
        assert h[1][0].startswith(r["name"])  # the literal (escaped) name is the visible text
    # every scalar metric of every row, in the per-family tables
    for family, keys in (("matching", ["matching/f1@0.50"]), ("coco_ap", ["coco_ap/ap"])):
        fam_rows, _ = html_rows_attr(folder / "index.html", "data-family", family)
        assert len(fam_rows) == len(rows)
        for r, cells in zip(rows, fam_rows, strict=True):
            assert cells[0][0] == r["name"]
            for key, (text, value) in zip(keys, cells[1:], strict=True):
                s = r["metrics"][key]
                assert float(value) == s["mean"]
                assert text.split(" ± ")[0] == four(s["mean"])
    # threshold series: one table per series, entries x thresholds, in HTML and Markdown
    for base in ("matching/precision", "matching/recall"):
        ser_rows, _ = html_rows_attr(folder / "index.html", "data-series", base)
        md_rows = md_table(md, "| entry | @0.5 | @0.6 | @0.7 | @0.8 | @0.9 |", after=f"**{base}**")
        for r, cells, mrow in zip(rows, ser_rows, md_rows, strict=True):
            values = [r["metrics"][f"{base}@{t:.2f}"]["mean"] for t in (0.5, 0.6, 0.7, 0.8, 0.9)]
            assert [float(v) for _, v in cells[1:]] == values
            assert [t for t, _ in cells[1:]] == [four(v) for v in values] == mrow[1:]
    assert "matching/precision@0.50" not in [k["key"] for k in data["metrics"]][:2]


def html_rows_attr(path: Path, attr: str, value: str):
    """Rows of the table carrying ``attr="value"``."""

    class P(TableParser):
        def handle_starttag(self, tag, attrs):
            if tag == "table" and dict(attrs).get(attr) == value:
                attrs = [*attrs, ("id", self.table_id)]
            super().handle_starttag(tag, attrs)

    parser = P(f"{attr}-{value}")
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.rows, parser


def test_hostile_text_is_escaped_everywhere(tmp_path):
    store = LeaderboardStore(tmp_path / "lb")
    entry = make_entry(HOSTILE, 0.5, 0)
    entry.manifest["code"] = {"url": "javascript:alert(1)", "commit": "abcdef1"}
    entry.manifest["paper"] = "data:text/html,<script>alert(2)</script>"
    entry.manifest["authors"] = ["<b onmouseover=alert(3)>Mallory</b>"]
    store.add(entry)
    out = publish(store, tmp_path / "site", overlays=False).out
    page = (out / INST.path / "index.html").read_text()
    assert "<script>window.__pwned" not in page and 'onerror="' not in page
    assert "<b onmouseover" not in page
    # unsafe URLs are shown as inert text, never as links
    assert 'href="javascript:' not in page and 'href="data:text' not in page
    assert "<span>javascript:alert(1)</span>" in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    _, parser = html_rows(out / INST.path / "index.html")
    assert parser.scripts == 1  # only assets/leaderboard.js
    assert not [k for k, _ in parser.attrs_seen if k.startswith("on")]
    assert not [
        v
        for k, v in parser.attrs_seen
        if k in ("href", "src") and ":" in v and not v.startswith(("http://", "https://", "data:,"))
    ]
    md = (out / INST.path / "README.md").read_text()
    assert "<script" not in md and "<b " not in md and "](javascript:" not in md
    assert "&lt;script&gt;" in md


def test_plots_are_real_images(site):
    _, out, _ = site
    inst = out / INST.path / "plots"
    names = sorted(p.name for p in inst.iterdir())
    assert "bar-matching--f1-0.50.png" in names and "bar-coco_ap--ap.png" in names
    assert "curves-matching.png" in names
    assert not [n for n in names if n.startswith("bar-matching--precision")]  # series -> curves
    for p in inst.iterdir():
        img = imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert float(np.std(img[..., :3])) > 0.01  # not blank
    confusion = sorted((out / CLS.path / "plots").glob("confusion-*.png"))
    assert len(confusion) == 2
    page = (out / CLS.path / "index.html").read_text()
    for p in confusion:
        assert f'src="plots/{p.name}"' in page
    assert sum(sum(r) for r in CONFUSION) == 22


def test_publish_is_deterministic(tmp_path, site):
    store, out, _ = site
    again = publish(store, tmp_path / "again", overlays=False).out
    a = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    b = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_publish_to_fsspec_and_hf_url_checks(site, tmp_path):
    store, out, _ = site
    _result, where = publish_to(store, "memory://published-site", overlays=False)
    fs = fsspec.filesystem("memory")
    try:
        assert where == "memory://published-site"
        assert (
            fs.cat_file(f"/published-site/{INST.path}/index.html")
            == (out / INST.path / "index.html").read_bytes()
        )
        assert fs.exists("/published-site/assets/leaderboard.js")
    finally:
        fs.rm("/published-site", recursive=True)
    with pytest.raises(PublishError, match="hf://datasets/ORG/NAME"):
        push(out, "hf://models/org/name")
    with pytest.raises(PublishError, match="not a published site"):
        push(tmp_path, "memory://x")
    with pytest.raises(PublishError, match="nothing to publish"):
        publish(LeaderboardStore(tmp_path / "empty"), tmp_path / "o")


def test_infinite_values_rendered(tmp_path):
    store = LeaderboardStore(tmp_path / "lb")
    store.add(make_entry("perfect", float("inf"), headline="image/psnr", ci=(float("inf"),) * 2))
    store.add(make_entry("finite", 30.0, headline="image/psnr", ci=(29.0, 31.0)))
    out = publish(store, tmp_path / "site", overlays=False).out
    folder = out / INST.path
    data = json.loads((folder / "leaderboard.json").read_text())
    assert data["rows"][0]["headline"]["mean"] == "inf"
    html, _ = html_rows(folder / "index.html")
    assert html[0][3] == ("∞", "Infinity") and html[1][3] == ("30.0000", "30.0")
    rows = md_table((folder / "README.md").read_text(), "| rank | entry |")
    assert rows[0][3] == "∞" and rows[1][3] == "30.0000"
