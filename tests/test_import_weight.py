"""Import paths stay light: what a fresh process pays before doing any work.

CTC scoring is benchmarked as a whole process and the CLI starts on every command, so these
paths must not pull in heavy libraries they do not use (checked by module, not by timing).
"""

import subprocess
import sys

import pytest

HEAVY = ("scipy.stats", "skimage", "pycocotools", "torch", "datasets")
#: What the core install leaves out: never imported on the data, scoring or leaderboard paths.
EXTRAS = ("torch", "torchvision", "safetensors", "onnxruntime", "datasets", "pyarrow", "s3fs")


@pytest.mark.parametrize(
    "module",
    [
        "cellbench.metrics.tracking",
        "cellbench.tasks.tracking.ctc",
        "cellbench.scoring",
        "cellbench.cli",
        "cellbench",
    ],
)
def test_import_does_not_pull_heavy_libraries(module, cli_env):
    code = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.strip()
    loaded = [m for m in out.split(",") if m]
    assert loaded == [], f"importing {module} loads {loaded}"


def test_ctc_folder_scoring_does_not_load_the_store(cli_env):
    # score_ctc_folders is timed as a whole process against py-ctcmetrics and traccuracy.
    code = (
        "import sys, cellbench.tasks.tracking.ctc; "
        "print(','.join(m for m in ('zarr', 'cellbench.store.zarr_store') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.strip()
    assert out == ""


@pytest.mark.parametrize(
    "module",
    [
        "cellbench.registry",
        "cellbench.leaderboard",
        "cellbench.submissions",
        "cellbench.croissant",
        "cellbench.napari",
        "cellbench.tasks.instance_segmentation.task",
    ],
)
def test_core_paths_import_no_extra(module, cli_env):
    code = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {EXTRAS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.strip()
    assert [m for m in out.split(",") if m] == [], f"importing {module} loads extras"


#: Never imported by ``cellbench score-ctc --json``: each costs 0.1-0.3 s of a process start
#: (scipy.optimize and scipy.sparse for assignments and components, numpy.ma which a plain
#: np.unique imports under NumPy 2.4, importlib.metadata for the version, rich for tables that
#: --json does not print, the other commands' modules).
SCORE_CTC_NEVER = (
    "scipy.optimize",
    "scipy.sparse",
    "scipy.ndimage",
    "numpy.ma",
    "importlib.metadata",
    "rich",
    "zarr",
    "cellbench.cli.datasets",
    "cellbench.cli.train",
    "cellbench.cli.server",
)


def test_score_ctc_process_imports_only_what_it_uses(cli_env, tmp_path):
    import json

    import numpy as np

    from cellbench.tasks.tracking.ctc import write_ctc_ground_truth, write_ctc_result
    from cellbench.tracks import TrackedSequence

    lab = np.zeros((4, 24, 24), np.uint16)
    lab[0:2, 2:8, 2:12] = 1  # divides into 2 and 3
    lab[2:4, 2:8, 2:7] = 2
    lab[2:4, 2:8, 7:12] = 3
    lab[:, 14:20, 14:20] = 4
    gt = TrackedSequence(lab, [[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1], [4, 0, 3, 0]])
    res = TrackedSequence(lab, [[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1], [4, 0, 1, 0]])
    res = TrackedSequence(np.where(lab == 4, 0, lab).astype(np.uint16), res.tracks[:3])
    write_ctc_ground_truth(gt, tmp_path / "01_GT")
    write_ctc_result(res, tmp_path / "01_RES")
    code = (
        "import sys, json\n"
        "from cellbench.cli import main\n"
        f"sys.argv = ['cellbench', 'score-ctc', {str(tmp_path / '01_GT')!r}, "
        f"{str(tmp_path / '01_RES')!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print(json.dumps([m for m in {SCORE_CTC_NEVER!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout
    *report, loaded = out.strip().splitlines()
    values = json.loads("\n".join(report))
    assert values["ctc"]["values"]["fn"] == 4  # the real scoring ran (track 4 missing)
    assert values["hota"]["values"]["hota"] < 1 and values["mot_ctc"]["values"]["idf1"] < 1
    assert json.loads(loaded) == [], f"score-ctc imports {loaded}"


def test_lazy_cli_registry_matches_the_commands():
    from click.testing import CliRunner

    from cellbench.cli import main
    from cellbench.cli.commands import LAZY, load

    for name in LAZY:
        assert load(name).name == name
    help_text = CliRunner().invoke(main, ["--help"]).output
    assert all(name in help_text for name in LAZY)
    # Loaded commands get the shared options like the others.
    assert any("--offline" in p.opts for p in main.get_command(None, "score-ctc").params)


def test_version_constant_is_the_packaged_version():
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from cellbench import __version__

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"] == version("cellbench")


def test_reading_label_image_predictions_loads_no_coco_or_download_code(cli_env, tmp_path):
    """A label-image folder (the common case) is read without the COCO-results and fetch code."""
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.eye(8, dtype=np.uint16))
    code = (
        "import sys; from pathlib import Path; from cellbench.tasks import get_task; "
        "from cellbench.predictions import digest_path; "
        f"p = get_task('instance-segmentation').read_predictions(Path({str(tmp_path)!r})); "
        f"digest_path({str(tmp_path)!r}); "  # what a score report records
        "print(len(p.sample_ids), ','.join(m for m in ('cellbench.store.fetch', "
        "'cellbench.tasks.instance_segmentation.coco_results') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.split()
    assert out == ["1"], out


#: Never imported by ``cellbench score --json -q`` on a store with a label-image folder: what
#: that process does not use (tqdm for a bar -q turns off, numpy.ma, the tables, the other
#: commands, the download layer, the COCO-results reader, scipy, and zarr: a local store is
#: read whole by cellbench.store.chunk_reader). tifffile and numcodecs are used.
SCORE_STORE_NEVER = (
    "zarr",
    "fsspec",
    "tqdm",
    "numpy.ma",
    "rich",
    "scipy.optimize",
    "scipy.sparse",
    "scipy.ndimage",
    "cellbench.cli.datasets",
    "cellbench.cli.train",
    "cellbench.cli.server",
    "cellbench.store.fetch",
    "cellbench.tasks.instance_segmentation.coco_results",
)


def _split_and_merge(truth):
    """The truth with its first two objects merged and the third split in interleaved columns."""
    import numpy as np

    ids = np.unique(truth)[1:]
    pred = truth.astype(np.int32)
    if ids.size >= 3:
        pred[truth == ids[1]] = ids[0]
        pred[(truth == ids[2]) & (np.indices(truth.shape)[1] % 2 == 0)] = int(truth.max()) + 1
    return pred


@pytest.mark.parametrize(
    ("errors", "shard"),
    [(False, False), (True, False), (False, True)],
    ids=["truth", "split-and-merge", "truth-format-4"],
)
def test_quiet_store_scoring_process_imports_only_what_it_uses(cli_env, tmp_path, errors, shard):
    """Also with splits and merges, whose object errors need assignments (scipy's solver), and
    from a sharded store (format 4), whose shards the hand-rolled reader decodes without zarr."""
    import json

    import numpy as np
    import tifffile

    from cellbench.registry import pull

    store = pull("synthetic-nuclei", progress=False, shard=shard)
    assert store.format.sharded == shard
    preds = tmp_path / "preds"
    preds.mkdir()
    for sid in store.sample_ids("test"):
        truth = np.asarray(store.sample(sid).instances)
        tifffile.imwrite(preds / f"{sid}.tif", _split_and_merge(truth) if errors else truth)
    code = (
        "import sys, json\n"
        "from cellbench.cli import main\n"
        "sys.argv = ['cellbench', 'score', '--task', 'instance-segmentation', '--dataset', "
        f"{str(store.path)!r}, {str(preds)!r}, '--bootstrap', '0', '--json', '-q']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"print(json.dumps([m for m in {SCORE_STORE_NEVER!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout
    *report, loaded = out.strip().splitlines()
    values = json.loads("\n".join(report))
    assert values["headline"]["name"] == "coco_ap/ap"
    if errors:  # the assignments ran
        assert values["metrics"]["object_errors/merge"] > 0
        assert values["metrics"]["object_errors/split"] > 0
    else:
        assert values["headline"]["value"] == 1.0  # the real scoring ran: predictions = truth
    assert json.loads(loaded) == [], f"cellbench score imports {loaded}"
