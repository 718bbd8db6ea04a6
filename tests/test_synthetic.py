"""Tests of the synthetic generators: validity, determinism and the properties they promise."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu

from cellbench.errors import DatasetNotFoundError, ValidationError
from cellbench.synthetic import (
    GENERATORS,
    LABEL_FREE_TARGETS,
    NUCLEI_CLASSES,
    PROTEIN_CLASSES,
    PROTEIN_PATTERNS,
    generate,
    label_free,
    nuclei,
    protein_localisation,
    timelapse,
)

REPO = Path(__file__).resolve().parents[1]
GROUP_KEYS = {"source", "plate", "well", "site", "cell_line", "microscope"}

# small versions of every registered generator, used by the generic tests
SMALL = {
    "nuclei": {"n_images": 4, "shape": (64, 64)},
    "nuclei-3d": {"n_images": 2, "shape": (8, 32, 32)},
    "protein-localisation": {"n_images": 8},
    "timelapse": {"n_sequences": 1, "n_frames": 5, "shape": (64, 64)},
    "label-free": {"n_images": 3, "shape": (64, 64)},
}


def _digest(samples) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.id.encode())
        for name, arr in sorted(s.arrays().items()):
            h.update(name.encode())
            h.update(str(arr.dtype).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(repr(sorted(s.metadata.items())).encode())
        h.update(repr(s.label).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- module-level fixtures


@pytest.fixture(scope="module")
def nuclei_default():
    return nuclei()


@pytest.fixture(scope="module")
def tl_default():
    return timelapse()


@pytest.fixture(scope="module")
def protein_set():
    return protein_localisation(n_images=80, seed=1)


# ---------------------------------------------------------------- every generator


def test_registry_lists_all_generators_with_full_defaults():
    import inspect

    assert set(GENERATORS) == set(SMALL)
    for name, spec in GENERATORS.items():
        params = set(inspect.signature(spec.function).parameters)
        assert set(spec.defaults) == params, name
        assert spec.tasks and spec.description
    assert GENERATORS["nuclei-3d"].defaults["ndim"] == 3
    with pytest.raises(TypeError):
        GENERATORS["nuclei"].defaults["seed"] = 3  # read-only


@pytest.mark.parametrize("name", sorted(SMALL))
def test_samples_valid_and_deterministic(name):
    first = generate(name, **SMALL[name])
    again = generate(name, **SMALL[name])
    other = generate(name, **SMALL[name], seed=1)
    for s in first:
        assert s.problems() == []
        assert s.split == "train"  # left at the default; cellbench.splits assigns splits
        assert set(s.metadata) >= GROUP_KEYS
        assert s.metadata["source"] == "synthetic"
        assert s.pixel_size["x"] == s.pixel_size["y"] == pytest.approx(0.65)
        assert s.channel_names
    assert len({s.id for s in first}) == len(first)
    assert _digest(first) == _digest(again)
    for a, b in zip(first, other, strict=True):
        assert not np.array_equal(a.image, b.image)


def test_identical_in_a_fresh_process_with_other_hash_seed():
    code = (
        "import hashlib, numpy as np\n"
        "from cellbench.synthetic import nuclei, timelapse\n"
        "h = hashlib.sha256()\n"
        "for s in nuclei(n_images=2, shape=(48, 48)) + timelapse(1, 4, (48, 48)):\n"
        "    for a in s.arrays().values(): h.update(np.ascontiguousarray(a).tobytes())\n"
        "print(h.hexdigest())\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    h = hashlib.sha256()
    for s in nuclei(n_images=2, shape=(48, 48)) + timelapse(1, 4, (48, 48)):
        for a in s.arrays().values():
            h.update(np.ascontiguousarray(a).tobytes())
    assert out.stdout.strip() == h.hexdigest()


def test_sample_does_not_depend_on_how_many_are_requested():
    few = nuclei(n_images=2, shape=(48, 48), n_plates=1)
    many = nuclei(n_images=5, shape=(48, 48), n_plates=1)
    for a, b in zip(few, many[:2], strict=True):
        assert a.id == b.id and a.metadata == b.metadata
        assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)


def test_generate_unknown_name_and_overrides():
    with pytest.raises(DatasetNotFoundError, match="nucleii"):
        generate("nucleii")
    assert len(generate("nuclei", n_images=2, shape=(32, 32))) == 2


def test_invalid_arguments_are_all_reported():
    with pytest.raises(ValidationError) as err:
        nuclei(n_images=0, density=2.0, seed=-1, shape=(8,))
    text = str(err.value)
    for word in ("n_images", "density", "seed", "shape"):
        assert word in text
    assert len(err.value.problems) == 4
    with pytest.raises(ValidationError, match="golgi"):
        protein_localisation(classes=("nuclear", "golgi"))
    with pytest.raises(ValidationError, match="class_weights"):
        protein_localisation(class_weights=(1.0, 2.0))
    with pytest.raises(ValidationError, match="n_frames"):
        timelapse(n_frames=1)
    with pytest.raises(ValidationError, match="ndim"):
        nuclei(ndim=4)


# ---------------------------------------------------------------- nuclei


def test_nuclei_layout_and_types(nuclei_default):
    assert len(nuclei_default) == 24
    s = nuclei_default[0]
    assert s.id == "nuclei-0000" and s.axes == "cyx" and s.channel_names == ["DAPI"]
    assert s.image.shape == (1, 128, 128) and s.image.dtype == np.uint16
    assert s.instances.dtype == np.uint16 and s.semantic.dtype == np.uint8
    assert NUCLEI_CLASSES == ("background", "interphase", "mitotic")
    plates = {x.metadata["plate"] for x in nuclei_default}
    assert len(plates) == 4
    pairs = {(x.metadata["cell_line"], x.metadata["microscope"]) for x in nuclei_default}
    assert len(pairs) == 4  # every cell line on every microscope: groups not confounded


def test_nuclei_labels_consistent(nuclei_default):
    n_total = n_mitotic = 0
    for s in nuclei_default:
        inst, sem = s.instances, s.semantic
        assert np.array_equal(sem > 0, inst > 0)
        ids = np.unique(inst[inst > 0])
        assert np.array_equal(ids, np.arange(1, ids.size + 1))  # sequential
        assert s.metadata["n_nuclei"] == ids.size
        # one class per nucleus, and each nucleus is one 4-connected blob
        lo = ndimage.minimum(sem, inst, ids)
        hi = ndimage.maximum(sem, inst, ids)
        assert np.array_equal(lo, hi)
        for i in ids:
            assert ndimage.label(inst == i)[1] == 1
        n_total += ids.size
        n_mitotic += int((np.asarray(lo) == 2).sum())
        assert set(np.unique(sem)) <= {0, 1, 2}
    assert 10 < n_total / len(nuclei_default) < 40
    assert 0.04 < n_mitotic / n_total < 0.2  # rare class, as requested (~10%)


def test_mitotic_nuclei_smaller_and_brighter(nuclei_default):
    area = {1: [], 2: []}
    brightness = {1: [], 2: []}
    for s in nuclei_default:
        ids = np.unique(s.instances[s.instances > 0])
        sizes = ndimage.sum(np.ones_like(s.instances), s.instances, ids)
        cls = ndimage.maximum(s.semantic, s.instances, ids)
        img = s.image[0].astype(float)
        background = np.median(img[s.instances == 0])
        mean = ndimage.mean(img, s.instances, ids) - background
        for c, a, b in zip(cls, sizes, mean, strict=True):
            # relative to the image's interphase median: removes microscope/plate scale
            area[int(c)].append(a)
            brightness[int(c)].append(b / np.median(mean[np.asarray(cls) == 1]))
    assert np.median(area[2]) < 0.6 * np.median(area[1])
    assert np.median(brightness[2]) > 1.4


def test_nuclei_touch_and_cross_the_border(nuclei_default):
    touching = border = 0
    for s in nuclei_default:
        inst = s.instances
        # neighbouring pixels with two different non-zero labels
        h = (inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)
        v = (inst[1:] != inst[:-1]) & (inst[1:] > 0) & (inst[:-1] > 0)
        touching += int(h.sum() + v.sum() > 0)
        edge = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
        border += int((edge > 0).any())
    assert touching >= len(nuclei_default) // 2
    assert border == len(nuclei_default)


def test_microscope_groups_differ_in_noise_and_background(nuclei_default):
    rel_noise = {}
    offset = {}
    for s in nuclei_default:
        img = s.image[0].astype(float)
        bg = ~ndimage.binary_dilation(s.instances > 0, iterations=6)
        pair = bg[:, 1:] & bg[:, :-1]
        noise = np.diff(img, axis=1)[pair].std() / np.sqrt(2)
        contrast = np.median(img[s.semantic == 1]) - np.median(img[bg])
        key = s.metadata["microscope"]
        rel_noise.setdefault(key, []).append(noise / contrast)
        offset.setdefault(key, []).append(np.median(img[bg]))
    assert set(rel_noise) == {"widefield-A", "spinning-disk-B"}
    # the spinning disk is clearly noisier relative to its signal, with no overlap
    assert max(rel_noise["widefield-A"]) < min(rel_noise["spinning-disk-B"])
    assert np.median(rel_noise["spinning-disk-B"]) > 2 * np.median(rel_noise["widefield-A"])
    assert abs(np.median(offset["widefield-A"]) - np.median(offset["spinning-disk-B"])) > 100


def test_nuclei_3d_volumes():
    samples = nuclei(n_images=3, ndim=3)
    for s in samples:
        assert s.id.startswith("nuclei3d-")
        assert s.axes == "czyx" and s.image.shape == (1, 16, 64, 64)
        assert s.instances.shape == (16, 64, 64) and s.semantic.shape == (16, 64, 64)
        assert s.pixel_size == {"z": 2.0, "y": 0.65, "x": 0.65}
        assert np.array_equal(s.semantic > 0, s.instances > 0)
        ids = np.unique(s.instances[s.instances > 0])
        assert ids.size >= 5
        slices = ndimage.find_objects(s.instances)
        z_extent = np.array([sl[0].stop - sl[0].start for sl in slices if sl is not None])
        xy_extent = np.array([sl[2].stop - sl[2].start for sl in slices if sl is not None])
        assert np.median(z_extent) >= 2  # real 3D objects spanning several planes
        # anisotropic sampling: far fewer planes than pixels across a nucleus
        assert np.median(z_extent) < 0.6 * np.median(xy_extent)


# ---------------------------------------------------------------- protein localisation


def test_protein_classes_balanced_and_weighted():
    s = protein_localisation(n_images=40)
    assert np.bincount([x.label for x in s]).tolist() == [10, 10, 10, 10]
    assert s[0].image.shape == (2, 64, 64) and s[0].channel_names == ["protein", "DAPI"]
    w = protein_localisation(n_images=50, class_weights=(5, 3, 1, 1))
    assert np.bincount([x.label for x in w]).tolist() == [25, 15, 5, 5]
    five = protein_localisation(n_images=10, classes=PROTEIN_PATTERNS)
    assert sorted({x.label for x in five}) == [0, 1, 2, 3, 4]
    assert "label" not in five[0].metadata and "class" not in str(five[0].metadata)


def _nucleus_and_distance(sample):
    """Central nucleus mask from the DAPI channel (Otsu) and distance to it."""
    dna = sample.image[1].astype(float)
    mask = dna > threshold_otsu(dna)
    lab, _ = ndimage.label(mask)
    h, w = mask.shape
    yy, xx = np.indices(mask.shape)
    d2 = np.where(mask, (yy - h / 2) ** 2 + (xx - w / 2) ** 2, np.inf)
    nucleus = lab == lab.flat[np.argmin(d2)]
    return nucleus, ndimage.distance_transform_edt(~nucleus)


def test_protein_class_patterns_are_what_they_claim(protein_set):
    assert PROTEIN_CLASSES == ("nuclear", "cytoplasmic", "membrane", "punctate")
    in_out, outer_inner, spotty = {}, {}, {}
    for s in protein_set:
        protein = s.image[0].astype(float)
        protein = np.clip(protein - np.percentile(protein, 5), 0, None)
        nucleus, dist = _nucleus_and_distance(s)
        near = (dist > 1) & (dist <= 6)
        inner = (dist > 0) & (dist <= 4)
        outer = (dist > 8) & (dist <= 16)
        around = (dist > 0) & (dist <= 15)
        name = PROTEIN_CLASSES[s.label]
        in_out.setdefault(name, []).append(protein[nucleus].mean() / protein[near].mean())
        outer_inner.setdefault(name, []).append(protein[outer].mean() / protein[inner].mean())
        vals = protein[around]
        spotty.setdefault(name, []).append((np.percentile(vals, 99) - np.median(vals)) / vals.std())
    # nuclear: brighter inside the nucleus than just around it; cytoplasmic the opposite
    assert min(in_out["nuclear"]) > 1.5 > 1.0 > max(in_out["cytoplasmic"])
    # membrane: signal far from the nucleus (cell edge) rather than next to it
    assert np.median(outer_inner["membrane"]) > 2 * np.median(outer_inner["cytoplasmic"])
    assert min(outer_inner["membrane"]) > max(outer_inner["cytoplasmic"])
    # punctate: a few bright spots over a dim background
    assert np.median(spotty["punctate"]) > 1.5 * np.median(spotty["cytoplasmic"])


def test_protein_crops_vary(protein_set):
    # intensity and size vary within a class: not solvable by a single template
    nuclear = [s for s in protein_set if s.label == 0]
    totals = [s.image[0].astype(float).sum() for s in nuclear]
    areas = [_nucleus_and_distance(s)[0].sum() for s in nuclear]
    assert max(totals) / min(totals) > 1.5
    assert max(areas) / min(areas) > 1.5


# ---------------------------------------------------------------- time-lapse


def check_ctc_consistency(instances: np.ndarray, tracks: np.ndarray) -> list[str]:
    """Independent check of the CTC man_track.txt rules; returns the violations."""
    errors = []
    n_frames = instances.shape[0]
    ids = tracks[:, 0]
    if len(set(ids.tolist())) != len(ids):
        errors.append("track ids reused")
    by_id = {int(t[0]): t for t in tracks}
    present = {int(i): set() for i in ids}
    for f in range(n_frames):
        labels = set(np.unique(instances[f]).tolist()) - {0}
        alive = {int(t[0]) for t in tracks if t[1] <= f <= t[2]}
        if labels != alive:
            errors.append(f"frame {f}: labels {sorted(labels ^ alive)} differ from the table")
        for label in labels:
            present.setdefault(label, set()).add(f)
    for tid, frames in present.items():
        if tid not in by_id:
            errors.append(f"label {tid} not in the table")
            continue
        _, start, end, _ = by_id[tid]
        if frames != set(range(start, end + 1)):
            errors.append(f"track {tid} not present in exactly frames {start}..{end}")
    children: dict[int, list[int]] = {}
    for tid, start, end, parent in tracks.tolist():
        if not 0 <= start <= end < n_frames:
            errors.append(f"track {tid}: bad span {start}..{end}")
        if parent:
            if parent not in by_id:
                errors.append(f"track {tid}: parent {parent} does not exist")
            elif by_id[parent][2] + 1 != start:
                errors.append(f"track {tid} starts at {start}, parent ends {by_id[parent][2]}")
            children.setdefault(parent, []).append(tid)
    for parent, kids in children.items():
        if len(kids) != 2:
            errors.append(f"track {parent} has {len(kids)} daughters")
    return errors


def test_timelapse_shapes(tl_default):
    assert len(tl_default) == 2
    for s in tl_default:
        assert s.axes == "tcyx" and s.image.shape == (20, 1, 128, 128)
        assert s.image.dtype == np.uint16 and s.instances.shape == (20, 128, 128)
        assert s.tracks.dtype == np.int64 and s.tracks.shape[1] == 4
        assert s.pixel_size == {"t": 300.0, "y": 0.65, "x": 0.65}


def test_timelapse_tracks_consistent_and_eventful(tl_default):
    from ctc_metrics.metrics import valid

    for s in tl_default:
        tracks, inst = s.tracks, s.instances
        assert check_ctc_consistency(inst, tracks) == []
        # the Cell Tracking Challenge's own validator agrees
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            labels = [np.unique(f) for f in inst]
            assert valid([f"mask{t:03d}.tif" for t in range(len(inst))], tracks, labels) == 1
        last = inst.shape[0] - 1
        parents = set(tracks[tracks[:, 3] > 0, 3].tolist())
        assert len(parents) >= 1  # divisions
        assert s.metadata["n_divisions"] == len(parents)
        assert ((tracks[:, 1] > 0) & (tracks[:, 3] == 0)).any()  # appearances
        ended = [t for t in tracks if t[2] < last and t[0] not in parents]
        assert ended  # disappearances (not divisions)


def test_timelapse_daughters_near_and_smaller_than_parent(tl_default):
    ratios, distances = [], []
    for s in tl_default:
        inst = s.instances
        by_id = {int(t[0]): t for t in s.tracks}
        for tid, start, _, parent in s.tracks.tolist():
            if not parent:
                continue
            p_end = by_id[parent][2]
            before = max(by_id[parent][1], p_end - 3)  # before mitotic rounding
            p_area = (inst[before] == parent).sum()
            d_area = (inst[start] == tid).sum()
            ratios.append(d_area / p_area)
            pc = np.array(ndimage.center_of_mass(inst[p_end] == parent))
            dc = np.array(ndimage.center_of_mass(inst[start] == tid))
            distances.append(np.linalg.norm(pc - dc) / np.sqrt(p_area / np.pi))
    assert ratios and np.median(ratios) < 0.8
    assert max(distances) < 2.0  # within two parent radii


def test_timelapse_cells_move_smoothly(tl_default):
    steps = []
    for s in tl_default:
        for tid, start, end, _ in s.tracks.tolist():
            for f in range(start, end):
                a = s.instances[f] == tid
                b = s.instances[f + 1] == tid
                if a.sum() > 150 and b.sum() > 150 and not _touches_border(a | b):
                    steps.append(
                        np.linalg.norm(
                            np.subtract(ndimage.center_of_mass(a), ndimage.center_of_mass(b))
                        )
                    )
    assert 0.3 < np.median(steps) < 4.0


def _touches_border(mask):
    return mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()


def test_division_rate_controls_divisions():
    def divisions(rate):
        seqs = timelapse(n_sequences=2, n_frames=12, shape=(96, 96), division_rate=rate)
        for s in seqs:
            assert check_ctc_consistency(s.instances, s.tracks) == []
        return sum(s.metadata["n_divisions"] for s in seqs)

    assert divisions(0.0) == 0
    assert divisions(0.15) > divisions(0.01)


# ---------------------------------------------------------------- label-free


def test_label_free_pairs_share_cells():
    samples = label_free(n_images=6, shape=(96, 96))
    for s in samples:
        assert s.image.shape == (1, 96, 96) and s.image.dtype == np.uint16
        assert s.target.shape == (2, 96, 96) and s.target.dtype == np.float32
        assert s.target_channel_names == list(LABEL_FREE_TARGETS)
        assert s.channel_names == ["phase"]

    def darkness(s):  # phase objects are dark: inverted, illumination removed, smoothed
        ph = s.image[0].astype(float)
        return -ndimage.gaussian_filter(ph - ndimage.gaussian_filter(ph, 10), 2)

    def edges(s):
        ph = ndimage.gaussian_filter(s.image[0].astype(float), 1.5)
        return ndimage.gaussian_gradient_magnitude(ph, 1.5) / ndimage.gaussian_filter(ph, 10)

    n = len(samples)
    for feature, channel in ((darkness, 0), (edges, 1)):
        corr = np.array(
            [
                [
                    np.corrcoef(feature(samples[i]).ravel(), samples[j].target[channel].ravel())[
                        0, 1
                    ]
                    for j in range(n)
                ]
                for i in range(n)
            ]
        )
        matched = np.diag(corr)
        mismatched = corr[~np.eye(n, dtype=bool)]
        # the same cells: matched pairs correlate, mismatched pairs much less
        assert matched.min() > 0.3
        assert matched.min() > mismatched.max() + 0.1


def test_label_free_target_is_not_a_pixelwise_function_of_the_input():
    for s in label_free(n_images=3, shape=(96, 96)):
        phase = s.image[0].astype(float)
        # best possible per-pixel lookup: mean target per phase-intensity bin
        edges = np.quantile(phase, np.linspace(0, 1, 65))
        bins = np.clip(np.searchsorted(edges, phase, side="right") - 1, 0, 63)
        nuclei_target = s.target[0].astype(float)
        mean = np.bincount(bins.ravel(), nuclei_target.ravel(), 64) / np.maximum(
            np.bincount(bins.ravel(), minlength=64), 1
        )
        residual = ((nuclei_target - mean[bins]) ** 2).sum()
        total = ((nuclei_target - nuclei_target.mean()) ** 2).sum()
        assert 1 - residual / total < 0.5
        # nuclei are visible in the input at all: darker there than elsewhere
        mask = nuclei_target > threshold_otsu(nuclei_target)
        assert phase[mask].mean() < phase[~mask].mean()


def test_empty_fields_are_valid():
    for s in nuclei(n_images=2, density=0.0) + nuclei(n_images=1, ndim=3, density=0.0):
        assert s.problems() == [] and s.instances.max() == 0 and s.metadata["n_nuclei"] == 0
    (seq,) = timelapse(n_sequences=1, n_frames=3, density=0.0)
    assert seq.problems() == [] and seq.tracks.shape == (0, 4) and seq.instances.max() == 0
    (pair,) = label_free(n_images=1, density=0.0)
    assert pair.problems() == [] and pair.metadata["n_cells"] == 0
