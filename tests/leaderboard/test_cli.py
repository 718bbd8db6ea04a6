import json
import subprocess

import yaml

from cellbench.leaderboard import BoardKey, LeaderboardStore
from tests.leaderboard.helpers import make_manifest, make_report
from tests.leaderboard.site_fixture import build_store

INST = BoardKey("toy", "1.0", "instance-segmentation", "test")


def run(cmd, env, *args):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


def test_add_show_list_publish(tmp_path, cli_cmd, cli_env):
    root = tmp_path / "lb"
    build_store(root)
    report = make_report(0.91, ci=(0.88, 0.93), runtime_s=4.25, peak_memory_mb=812.0)
    report.save(tmp_path / "report.json")
    manifest = make_manifest("Baseline U-Net", seed=0)
    manifest["code"] = {"url": "https://example.org/cellbench", "commit": "1234567"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(manifest))
    sha = "ab" * 32
    res = run(
        cli_cmd,
        cli_env,
        "leaderboard",
        "add",
        str(tmp_path / "report.json"),
        "--manifest",
        str(tmp_path / "m.yaml"),
        "--root",
        str(root),
        "--submission-sha256",
        sha,
    )
    assert res.returncode == 0, res.stderr
    assert "added Baseline U-Net (seed 0) to toy@1.0/instance-segmentation/test" in res.stdout
    entries = {e.name: e for e in LeaderboardStore(root).entries(INST)}
    added = entries["Baseline U-Net"]
    assert added.submission_sha256 == sha and added.report.headline.value == 0.91
    assert added.report.provenance.extra["manifest_sha256"] == added.manifest_sha256

    # adding the same replicate again is refused with one line
    res = run(
        cli_cmd,
        cli_env,
        "leaderboard",
        "add",
        str(tmp_path / "report.json"),
        "--manifest",
        str(tmp_path / "m.yaml"),
        "--root",
        str(root),
        "--submission-sha256",
        sha,
    )
    assert res.returncode == 1 and "already has a replicate with seed 0" in res.stderr

    res = run(
        cli_cmd, cli_env, "leaderboard", "show", "toy", "instance-segmentation", "--root", str(root)
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    top = next(line for line in lines if "Baseline U-Net" in line)
    assert "0.9100" in top and "[0.8800, 0.9300]" in top and "4.2" in top and "812" in top
    assert top.split()[1] == "1"  # rank 1 in the first column
    assert any("0.8300 ± 0.0300" in line for line in lines)  # the three-seed entry

    res = run(cli_cmd, cli_env, "leaderboard", "list", "--root", str(root))
    assert (
        res.returncode == 0 and "Baseline U-Net" in res.stdout and "classification" in (res.stdout)
    )

    out = tmp_path / "site"
    res = run(
        cli_cmd,
        cli_env,
        "leaderboard",
        "publish",
        "--root",
        str(root),
        "--out",
        str(out),
        "--no-overlays",
    )
    assert res.returncode == 0, res.stderr
    assert "rendered 2 leaderboard(s)" in res.stdout
    board = json.loads((out / INST.path / "leaderboard.json").read_text())
    assert board["rows"][0]["name"] == "Baseline U-Net"
    assert board["rows"][0]["runtime_s"]["mean"] == 4.25

    res = run(cli_cmd, cli_env, "leaderboard", "show", "toy", "tracking", "--root", str(root))
    assert res.returncode == 1 and "no leaderboard for toy / tracking / test" in res.stderr
    res = run(cli_cmd, cli_env, "leaderboard", "publish", "--root", str(root))
    assert res.returncode == 1 and "give --out DIR and/or --to URL" in res.stderr


def test_publish_shows_progress_and_controls_command(tmp_path, cli_cmd, cli_env):
    from cellbench.registry import pull
    from tests.leaderboard.helpers import make_entry

    root = tmp_path / "lb"
    build_store(root)
    res = run(
        cli_cmd,
        cli_env,
        "leaderboard",
        "publish",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "site"),
    )
    assert res.returncode == 0, res.stderr
    progress = [line for line in res.stderr.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in progress] == ["[1/2]", "[2/2]"]
    assert "figures drawn" in progress[0] and "published 2 board(s)" in res.stderr
    quiet = run(
        cli_cmd,
        cli_env,
        "leaderboard",
        "publish",
        "--root",
        str(root),
        "--out",
        str(tmp_path / "site"),
        "--quiet",
    )
    assert quiet.returncode == 0 and quiet.stderr == ""

    store = pull("synthetic-protein-localisation", options={"n_images": 40}, progress=False)
    entry = make_entry(
        "m",
        0.5,
        dataset=store.id,
        task="classification",
        headline="classification/macro_f1",
        checksum=store.checksum,
        manifest={"dataset": f"{store.id}@{store.version}"},
    )
    LeaderboardStore(root).add(entry)
    res = run(
        cli_cmd, cli_env, "leaderboard", "controls", store.id, "classification", "--root", str(root)
    )
    assert res.returncode == 0, res.stderr
    assert "control: majority class: classification/macro_f1" in res.stdout
    assert "control: perfect: classification/macro_f1 1.0000" in res.stdout
    key = entry.key
    assert len(LeaderboardStore(root).controls(key)) == 2
    res = run(cli_cmd, cli_env, "leaderboard", "controls", store.id, "--root", str(root))
    assert res.returncode == 1 and "give DATASET and TASK, or neither" in res.stderr
