"""The CLI as scripts use it: --json, whole ids, --out -, --offline anywhere, Ctrl-C, spellings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.cli.options import CliOptions
from cellbench.predictions import Prediction, PredictionSet, write_predictions
from cellbench.registry import pull, store_path


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_datasets_list_json_and_full_ids_on_a_narrow_pipe(runner):
    rows = _json(runner.invoke(main, ["datasets", "list", "--json"]))
    ids = [r["id"] for r in rows]
    assert "synthetic-protein-localisation" in ids and "dsb2018-stardist" in ids
    assert all(set(r) >= {"id", "version", "tasks", "license", "cached"} for r in rows)
    table = runner.invoke(main, ["datasets", "list"], terminal_width=80)
    assert table.exit_code == 0
    for ident in ids:  # every id whole, never "dsb2018-s…"
        assert ident in table.stdout
    assert "…" not in "".join(line.split("│")[1] for line in table.stdout.splitlines()[3:-1])


def test_datasets_info_json(runner):
    card = _json(runner.invoke(main, ["datasets", "info", "synthetic-nuclei", "--json"]))
    assert card["id"] == "synthetic-nuclei" and card["version"] == "1.0"
    assert card["class_names"]["semantic"] == ["background", "interphase", "mitotic"]
    assert card["cached"] is False and card["versions"] == ["1.0"]


def test_offline_after_the_subcommand_reaches_the_command():
    seen = []

    @main.command("probe-offline", hidden=True)
    @click.pass_obj
    def probe(options: CliOptions) -> None:
        seen.append(options.offline)

    from cellbench.cli.options import add_shared_options

    try:
        add_shared_options(main)
        runner = CliRunner()
        for args in (
            ["probe-offline"],
            ["probe-offline", "--offline"],
            ["--offline", "probe-offline"],
        ):
            assert runner.invoke(main, args).exit_code == 0
    finally:
        main.commands.pop("probe-offline")
    assert seen == [None, True, True]


def test_offline_after_a_nested_subcommand_stops_the_network(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
    res = runner.invoke(main, ["datasets", "pull", "dsb2018-stardist", "-q", "--offline"])
    assert res.exit_code != 0
    assert "offline" in res.stderr.lower()
    assert not store_path("dsb2018-stardist", "1.0").exists()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A pulled synthetic store and a prediction set of its test split (ground truth, shifted)."""
    home = tmp_path_factory.mktemp("home")
    old = os.environ.get("CELLBENCH_HOME")
    os.environ["CELLBENCH_HOME"] = str(home)
    try:
        store = pull("synthetic-nuclei", progress=False)
        preds = [
            Prediction(sample_id=s, mask=np.roll(store.sample(s).instances, 2, axis=-1))
            for s in store.sample_ids("test")
        ]
        pset = PredictionSet.from_predictions(
            "instance-segmentation", preds, store.id, store.version, "test"
        )
        path = write_predictions(home / "preds.zarr", pset)
    finally:
        if old is None:
            os.environ.pop("CELLBENCH_HOME", None)
        else:
            os.environ["CELLBENCH_HOME"] = old
    return home, store, path


def test_score_json_out_dash_and_one_spelling(runner, scored, monkeypatch):
    home, _store, preds = scored
    monkeypatch.setenv("CELLBENCH_HOME", str(home))
    base = ["score", "--task", "instance-segmentation", "--dataset", "synthetic-nuclei"]
    as_json = _json(runner.invoke(main, [*base, str(preds), "--bootstrap", "20", "--json", "-q"]))
    to_stdout = _json(runner.invoke(main, [*base, str(preds), "--bootstrap", "20", "--out", "-"]))
    assert as_json["headline"]["name"] == "coco_ap/ap" and as_json["split"] == "test"
    assert 0.0 < as_json["headline"]["value"] < 1.0
    assert to_stdout["headline"] == as_json["headline"]
    # the old spelling of the bootstrap seed still works, the help shows one spelling
    old = _json(
        runner.invoke(main, [*base, str(preds), "--bootstrap", "20", "--seed", "0", "--json"])
    )
    assert old["headline"] == as_json["headline"]
    help_text = runner.invoke(main, ["score", "--help"]).stdout
    assert "--bootstrap-seed" in help_text and "--seed" not in help_text.replace("-seed", "")
    submit_help = runner.invoke(main, ["submit", "--help"]).stdout
    assert "--bootstrap INTEGER" in submit_help and "--n-bootstrap" not in submit_help
    assert "--bootstrap-seed" in submit_help and "[default: auto]" in submit_help


def test_score_out_that_cannot_be_written_fails_before_scoring(
    runner, scored, monkeypatch, tmp_path
):
    """A report destination that cannot be written is refused when the command starts (one
    line, exit 2), not after the scoring work with a traceback."""
    from cellbench import scoring

    home, _store, preds = scored
    monkeypatch.setenv("CELLBENCH_HOME", str(home))
    calls = []
    monkeypatch.setattr(scoring, "score", lambda *a, **k: calls.append(a))
    (tmp_path / "afile").write_text("x")
    base = ["score", "--task", "instance-segmentation", "--dataset", "synthetic-nuclei", str(preds)]
    for out, line in (
        (tmp_path / "afile" / "r.json", f"cannot be created: {tmp_path / 'afile'} is a file"),
        (tmp_path, "is a folder (name the file to write)"),
    ):
        res = runner.invoke(main, [*base, "--out", str(out), "-q"])
        assert res.exit_code == 2 and f"Invalid value for '--out': {out}: {line}" in res.output
    assert calls == []


def test_submit_json_then_leaderboard_list_and_show_json(runner, scored, monkeypatch, tmp_path):
    home, store, preds = scored
    monkeypatch.setenv("CELLBENCH_HOME", str(home))
    assert runner.invoke(main, ["submit", "--init", str(tmp_path / "m.yaml")]).exit_code == 0
    manifest = yaml.safe_load((tmp_path / "m.yaml").read_text())
    manifest.update(
        name="Shifted truth with a deliberately long entry name",
        submission=str(preds),
        dataset=f"{store.id}@{store.version}",
    )
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest))
    root = tmp_path / "lb"
    out = _json(
        runner.invoke(
            main,
            [
                "submit",
                str(tmp_path / "m.yaml"),
                "--root",
                str(root),
                "--bootstrap",
                "20",
                "--json",
            ],
        )
    )
    assert out["name"] == manifest["name"] and out["dry_run"] is False
    assert out["report"]["headline"]["name"] == "coco_ap/ap"
    boards = _json(runner.invoke(main, ["leaderboard", "list", "--root", str(root), "--json"]))
    assert [(b["ref"], b["task"], b["entries"]) for b in boards] == [
        ("synthetic-nuclei@1.0", "instance-segmentation", 1)
    ]
    assert boards[0]["leader"] == manifest["name"]
    board = _json(
        runner.invoke(
            main,
            [
                "leaderboard",
                "show",
                "synthetic-nuclei",
                "instance-segmentation",
                "--root",
                str(root),
                "--json",
            ],
        )
    )
    assert board["rows"][0]["name"] == manifest["name"]
    assert board["rows"][0]["headline"]["mean"] == pytest.approx(out["report"]["headline"]["value"])
    listed = runner.invoke(main, ["leaderboard", "list", "--root", str(root)], terminal_width=80)
    assert "synthetic-nuclei@1.0" in listed.stdout


def test_missing_extra_is_one_line_naming_it(runner, monkeypatch):
    pull("synthetic-nuclei", options={"n_images": 8}, progress=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `cellbench[hf]` were not installed
    for name in [m for m in sys.modules if m.startswith("cellbench.store.hf")]:
        monkeypatch.delitem(sys.modules, name)
    args = ["datasets", "export", "synthetic-nuclei", "--to", "hf", "out"]
    res = runner.invoke(main, args, prog_name="cellbench")
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        "error: `cellbench datasets export` needs datasets, which the core install leaves out: "
        "pip install 'cellbench[hf]'"
    ]


def test_ctrl_c_exits_130_and_leaves_no_store(cli_cmd, cli_env, tmp_path):
    env = dict(cli_env, CELLBENCH_HOME=str(tmp_path / "home"))
    # A test run started in the background (`make test &` in a script) ignores SIGINT, and a
    # Python started with SIGINT ignored keeps ignoring it: the CLI starts here with the
    # handler it gets from a terminal.
    terminal = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "runpy.run_module('cellbench', run_name='__main__', alter_sys=True)"
    )
    assert cli_cmd[1:] == ["-m", "cellbench"]
    proc = subprocess.Popen(
        [cli_cmd[0], "-c", terminal, "datasets", "pull", "synthetic-label-free", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    scratch = tmp_path / "home"
    deadline = time.monotonic() + 60
    # wait until the build has started writing arrays: an interrupt that lands earlier, while
    # the recipe imports scipy, can be swallowed inside a C extension's import (exit 0)
    while time.monotonic() < deadline:
        if any(p.name == "zarr.json" for p in scratch.rglob("*")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err
    stores = tmp_path / "home" / "stores"
    assert not list(stores.rglob("zarr.json")) if stores.exists() else True
    leftovers = [p for p in (tmp_path / "home").rglob("*") if p.is_dir() and p.name.startswith(".")]
    assert leftovers == []
