"""The baseline runner (``baselines/run_baselines.py``): profiles, records, READMEs, entries."""

import json
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The CPU profile sets torch's thread count for the process; give it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_gpu_profile_is_refused_without_cuda_and_unknown_names_are_listed(capsys, baseline_runner):
    rb = baseline_runner
    with pytest.raises(SystemExit) as exc:
        rb.main(["--profile", "gpu", "--only", "unet"])
    assert exc.value.code == 2
    assert "the gpu profile needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        rb.main(["--profile", "cpu", "--only", "unet", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown baselines: nope" in err and "known: embedding-unet, maskrcnn" in err


def test_every_baseline_folder_has_a_gpu_run_on_a_catalog_dataset_serving_its_task(
    baseline_runner,
):
    from cellbench.catalog import Catalog

    rb = baseline_runner
    catalog = Catalog()
    folders = {
        (p.parent.parent.name, p.parent.name) for p in REPO.glob("baselines/*/*/config.yaml")
    }
    assert {(r.task, r.model) for r in rb.GPU_RUNS} == folders
    assert {(r.task, r.model) for r in rb.CPU_RUNS} == folders
    for run in rb.GPU_RUNS + rb.CPU_RUNS:
        assert run.task in catalog.card(run.dataset).tasks, run
    # the published runs cover a real dataset for every task that has one in the catalog
    real = {c.id for c in catalog.cards() if not c.id.startswith("synthetic-")}
    for task in ("semantic-segmentation", "instance-segmentation", "augmented-microscopy"):
        assert {r.dataset for r in rb.GPU_RUNS if r.task == task} & real, task


def test_cpu_profile_trains_scores_records_renders_and_enters_one_baseline(
    tmp_path, baseline_runner
):
    rb = baseline_runner
    folder = tmp_path / "baselines" / "semantic-segmentation" / "unet"
    shutil.copytree(REPO / "baselines" / "semantic-segmentation" / "unet", folder)
    (folder / "results-cpu.json").unlink()
    args = ["--profile", "cpu", "--only", "unet", "--baselines", str(tmp_path / "baselines")]
    args += ["--out", str(tmp_path / "runs"), "--leaderboards", str(tmp_path / "boards")]
    args += ["--set", "epochs=2", "--set", "samples_per_epoch=16", "--max-minutes", "60"]
    code = rb.main(args)
    assert code == 0
    record = json.loads((folder / "results-cpu.json").read_text())
    assert record["command"] == (
        "python baselines/run_baselines.py --profile cpu --only unet "
        "--set epochs=2 --set samples_per_epoch=16 --max-minutes 60"
    )
    assert record["epochs_run"] == 2 and record["epochs_configured"] == 2
    assert not record["time_limited"] and record["precision"] == "fp32"
    assert record["config_overrides"]["epochs"] == 2
    assert record["config_overrides"]["max_minutes"] == 60
    assert record["config_overrides"]["model"]["base_channels"] == 16  # the CPU override kept
    s = record["splits"]
    assert [s[k]["n"] for k in ("train", "val", "test")] == [32, 16, 16]
    lo, hi = s["test"]["ci"]
    assert 0.0 <= lo <= s["test"]["headline"] <= hi <= 1.0
    assert s["train"]["ci"] is None
    # the README section is exactly the rendering of the record
    readme = (folder / "README.md").read_text()
    block = rb.render_block(folder, rb.PROFILE["cpu"])
    assert block in readme and f"{s['test']['headline']:.4f} (95% CI {lo:.4f}-{hi:.4f})" in block
    assert readme.count("<!-- cpu-results:begin -->") == 1
    assert "GPU results: not yet measured." in readme  # the GPU section is untouched
    # one leaderboard entry with the same test score and no machine paths
    entries = list((tmp_path / "boards").rglob("entries/*.json"))
    assert len(entries) == 1
    assert "synthetic-nuclei@1.0/semantic-segmentation/test" in entries[0].as_posix()
    text = entries[0].read_text()
    assert str(tmp_path) not in text
    entry = json.loads(text)
    assert entry["manifest"]["name"] == "unet (small CPU config)"
    assert entry["report"]["headline"]["value"] == s["test"]["headline"]
    assert [entry["report"]["headline"][k] for k in ("ci_low", "ci_high")] == [lo, hi]


def test_gpu_results_accumulate_per_dataset_and_render_one_section_each(tmp_path, baseline_runner):
    """The GPU records path, fed with the record of a real (CPU) run of the unet baseline."""
    rb = baseline_runner
    folder = tmp_path / "semantic-segmentation" / "unet"
    shutil.copytree(REPO / "baselines" / "semantic-segmentation" / "unet", folder)
    gpu = rb.PROFILE["gpu"]
    cpu_block = rb.render_block(folder, rb.PROFILE["cpu"])
    assert "GPU results: not yet measured." in rb.render_block(folder, gpu)
    real = json.loads((folder / "results-cpu.json").read_text())
    a = {**real, "dataset": "synthetic-nuclei@1.0", "profile": "gpu"}
    b = {**real, "dataset": "dsb2018-stardist@1.0", "time_limited": True, "epochs_run": 7}
    for record in (a, b, {**a, "train_wall_time_s": 12.0}):  # the last replaces the first
        rb._store_record(folder, gpu, record)
    runs = json.loads((folder / "results-gpu.json").read_text())["runs"]
    assert [r["dataset"] for r in runs] == ["dsb2018-stardist@1.0", "synthetic-nuclei@1.0"]
    assert runs[1]["train_wall_time_s"] == 12.0
    assert rb.load_records(folder, gpu) == runs
    rb.render_readme(folder, gpu)
    readme = (folder / "README.md").read_text()
    block = readme.split("<!-- gpu-results:begin -->")[1].split("<!-- gpu-results:end -->")[0]
    assert "not yet measured" not in block
    assert block.index("### dsb2018-stardist@1.0") < block.index("### synthetic-nuclei@1.0")
    assert "Stopped by the time limit after 7 epochs." in block
    assert "Training wall time 12 s" in block
    test = real["splits"]["test"]
    assert block.count(f"| test | {test['n']} | {test['headline']:.4f} ") == 2
    assert cpu_block in readme  # the CPU section is untouched


def test_check_smoke_tests_a_config_and_records_nothing(tmp_path, baseline_runner, capsys):
    folder = tmp_path / "baselines" / "classification" / "resnet18"
    shutil.copytree(REPO / "baselines" / "classification" / "resnet18", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["--profile", "cpu", "--check", "--only", "resnet18"]
    args += ["--baselines", str(tmp_path / "baselines")]
    args += ["--leaderboards", str(tmp_path / "boards")]
    assert baseline_runner.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(
        "ok   resnet18 on synthetic-protein-localisation: 1 epoch of 32 samples, test "
        "classification/macro_f1 "
    )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not (tmp_path / "boards").exists()
    # a config the engine rejects fails that run with one line, and the exit status says so
    (folder / "config.yaml").write_text(
        (folder / "config.yaml").read_text().replace("schedule: cosine", "schedule: linear")
    )
    assert baseline_runner.main(args) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("FAIL resnet18 on synthetic-protein-localisation: ValidationError")
    assert "schedule" in line


def test_instance_baseline_keeps_its_test_predictions_for_error_overlays(tmp_path, baseline_runner):
    from cellbench.leaderboard.site import publish
    from cellbench.predictions import digest_path

    folder = tmp_path / "baselines" / "instance-segmentation" / "embedding-unet"
    shutil.copytree(REPO / "baselines" / "instance-segmentation" / "embedding-unet", folder)
    boards = tmp_path / "boards"
    args = ["--profile", "cpu", "--only", "embedding-unet", "--set", "epochs=1"]
    args += ["--set", "samples_per_epoch=16", "--baselines", str(tmp_path / "baselines")]
    args += ["--out", str(tmp_path / "runs"), "--leaderboards", str(boards)]
    assert baseline_runner.main(args) == 0
    board = "synthetic-nuclei@1.0/instance-segmentation/test"
    (entry_file,) = (boards / board / "entries").glob("*.json")
    uri = json.loads(entry_file.read_text())["predictions_uri"]
    (kept,) = (boards / board / "predictions").glob("*.zarr")
    assert uri == f"{board}/predictions/{kept.name}"  # relative to the leaderboard root
    assert kept.name == f"embedding-unet-cpu-{digest_path(kept)[:12]}.zarr"
    assert not list(boards.glob(".staging-*"))  # nothing half-written left behind
    for path in [entry_file, *kept.rglob("zarr.json")]:
        assert str(tmp_path) not in path.read_text(), path  # no machine paths kept
    result = publish(boards, tmp_path / "site")
    assert not any("no error overlay" in n for n in result.notes.get(board, []))
    overlays = list((tmp_path / "site" / board / "plots").glob("overlay-*.png"))
    assert len(overlays) == 1
