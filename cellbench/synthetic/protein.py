"""Single-cell crops for protein subcellular localisation (image classification)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellbench.store.sample import Sample

from ._common import (
    CELL_LINES,
    MICROSCOPES,
    PIXEL_UM,
    ParamCheck,
    acquire,
    dataset_rng,
    illumination,
    plate_effect,
    plate_layout,
    public_metadata,
    sample_rng,
    smooth_field,
)
from ._shapes import (
    Objects,
    evaluate_texture,
    object_pairs,
    object_texture,
    owned_pairs,
    random_objects,
    soft_mask,
    splat_spots,
    to_image_frame,
)

#: Every localisation pattern :func:`protein_localisation` can draw.
PROTEIN_PATTERNS = ("nuclear", "cytoplasmic", "membrane", "punctate", "nucleolar")

#: The default classes of :func:`protein_localisation` (index = ``Sample.label``).
PROTEIN_CLASSES = ("nuclear", "cytoplasmic", "membrane", "punctate")

#: Channels of every protein-localisation image.
PROTEIN_CHANNELS = ("protein", "DAPI")

#: Most vesicles (punctate) or nucleoli (nucleolar) spots drawn per cell.
_MAX_SPOTS = 40


def protein_localisation(
    n_images: int = 200,
    shape: tuple[int, int] = (64, 64),
    seed: int = 0,
    classes: Sequence[str] = PROTEIN_CLASSES,
    class_weights: Sequence[float] | None = None,
    neighbours: bool = True,
    n_plates: int = 4,
) -> list[Sample]:
    """Generate single-cell crops whose label is where a tagged protein sits in the cell.

    Each crop is centred on one cell (irregular outline, off-centre nucleus) and has two
    channels: the protein of interest and a DAPI-like nuclear counterstain. The centre cell's
    protein follows its class pattern:

    - ``nuclear``: fills the nucleus (textured, excluded from nucleoli), faint cytoplasm;
    - ``cytoplasmic``: fills the cytoplasm, thinning towards the edge, mostly excluded from the
      nucleus;
    - ``membrane``: a thin, patchy ring at the cell edge over faint cytoplasm;
    - ``punctate``: bright vesicles (diffraction-limited spots) in the cytoplasm;
    - ``nucleolar``: a few bright blobs inside the nucleus over faint nucleoplasm.

    The task is made non-trivial by varying cell and nucleus size, shape and position,
    expression level (lognormal, a 10-fold range), leakage into other compartments, noise,
    blur, uneven illumination and, with ``neighbours``, parts of up to three neighbouring
    cells at the crop edge carrying random patterns of their own.

    Args:
        n_images: Number of crops.
        shape: ``(y, x)`` crop size in pixels (0.65 µm each); at least 32.
        seed: Non-negative seed; the same seed gives bit-identical samples.
        classes: Class names (a subset of :data:`PROTEIN_PATTERNS`, at least two, in label
            order).
        class_weights: Relative class frequencies (default balanced). The counts are exact
            (largest-remainder rounding) and every class gets at least one crop when
            ``n_images >= len(classes)``.
        neighbours: Draw partial neighbouring cells around the centre cell.
        n_plates: Number of plates the crops are spread over.

    Returns:
        Samples ``protein-0000``, ... with ``image`` uint16 ``(2, y, x)`` (channels
        :data:`PROTEIN_CHANNELS`), ``label`` the index into ``classes`` and metadata
        ``source``, ``plate``, ``well``, ``site``, ``cell_line``, ``microscope``.

    Raises:
        ValidationError: Listing every invalid argument.
    """
    check = ParamCheck("cellbench.synthetic.protein_localisation")
    check.integer("n_images", n_images, 1)
    check.integer("seed", seed, 0)
    check.shape("shape", shape, 2, 32)
    check.integer("n_plates", n_plates, 1)
    classes = tuple(classes)
    unknown = [c for c in classes if c not in PROTEIN_PATTERNS]
    if unknown:
        check.add(f"classes {unknown} are not among the patterns {list(PROTEIN_PATTERNS)}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        check.add(f"classes must be at least two distinct names, got {list(classes)}")
    weights = np.ones(len(classes)) if class_weights is None else np.asarray(class_weights, float)
    if weights.shape != (len(classes),) or not np.all(np.isfinite(weights)) or weights.min() <= 0:
        check.add(
            f"class_weights must be {len(classes)} positive numbers (one per class), "
            f"got {class_weights!r}"
        )
    check.raise_if_any()
    shape = (int(shape[0]), int(shape[1]))

    counts = apportion(n_images, weights)
    labels = np.repeat(np.arange(len(classes)), counts)
    labels = dataset_rng(seed, "protein-localisation").permutation(labels)
    pattern_ids = np.array([PROTEIN_PATTERNS.index(c) for c in classes])
    samples = []
    for i, meta in enumerate(plate_layout(n_images, n_plates)):
        rng = sample_rng(seed, "protein-localisation", i)
        effect = plate_effect(seed, "protein-localisation", meta["plate_index"])
        image = _crop(
            rng,
            shape,
            int(pattern_ids[labels[i]]),
            pattern_ids,
            meta["cell_line"],
            meta["microscope"],
            neighbours,
            effect,
        )
        samples.append(
            Sample(
                id=f"protein-{i:04d}",
                image=image,
                axes="cyx",
                channel_names=list(PROTEIN_CHANNELS),
                pixel_size={"y": PIXEL_UM, "x": PIXEL_UM},
                metadata=public_metadata(meta),
                label=int(labels[i]),
            )
        )
    return samples


def apportion(n: int, weights: np.ndarray) -> np.ndarray:
    """Split ``n`` into integer counts proportional to ``weights`` (largest remainder).

    When ``n >= len(weights)`` every count is at least one (a class that rounds to zero takes
    one from the largest count).
    """
    quota = n * weights / weights.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    if n >= weights.size:
        for empty in np.flatnonzero(counts == 0):  # at most len(weights) iterations
            counts[int(np.argmax(counts))] -= 1
            counts[empty] = 1
    return counts


def _crop(
    rng: np.random.Generator,
    shape: tuple[int, int],
    pattern: int,
    class_patterns: np.ndarray,
    cell_line: str,
    microscope: str,
    neighbours: bool,
    effect: float,
) -> np.ndarray:
    """One two-channel crop, uint16 ``(2, y, x)``."""
    line = CELL_LINES[cell_line]
    mic = MICROSCOPES[microscope]
    h, w = shape
    n_pixels = h * w

    # the centre cell, then up to three neighbours just touching it
    r0 = min(line.cell_radius_um / PIXEL_UM * np.exp(rng.normal(0.0, 0.12)), 0.36 * min(h, w))
    centre = np.array([h / 2, w / 2]) + rng.normal(0.0, 1.5, size=2)
    n_nb = int(rng.integers(0, 4)) if neighbours else 0
    nb_r = r0 * np.exp(rng.normal(0.0, 0.15, size=n_nb))
    nb_angle = rng.uniform(0, 2 * np.pi) + np.arange(n_nb) * 2 * np.pi / 3
    nb_angle = nb_angle + rng.uniform(-0.4, 0.4, size=n_nb)
    nb_dist = (r0 + nb_r) * rng.uniform(0.85, 1.0, size=n_nb)
    nb_centre = centre + nb_dist[:, None] * np.stack([np.sin(nb_angle), np.cos(nb_angle)], 1)
    n_cells = 1 + n_nb
    cell_r = np.concatenate([[r0], nb_r])
    cells = random_objects(
        rng,
        np.concatenate([centre[None], nb_centre]),
        cell_r,
        rng.uniform(1.0, 1.6, size=n_cells),
        rng.uniform(0.06, 0.14, size=n_cells),
    )
    patterns = np.concatenate([[pattern], rng.choice(class_patterns, size=n_nb)])

    # nuclei: off-centre inside their cell
    nuc_r = cell_r * rng.uniform(0.36, 0.5, size=n_cells)
    shift = rng.uniform(0, 0.22, size=n_cells) * cell_r
    shift_angle = rng.uniform(0, 2 * np.pi, size=n_cells)
    nuc_centre = cells.centers + shift[:, None] * np.stack(
        [np.sin(shift_angle), np.cos(shift_angle)], 1
    )
    nuclei = random_objects(
        rng, nuc_centre, nuc_r, rng.uniform(1.0, 1.35, size=n_cells), line.irregularity
    )

    cell_pairs, cell_lab, cell_d = owned_pairs(object_pairs(shape, cells), n_cells, n_pixels)
    nuc_pairs = object_pairs(shape, nuclei)
    nuc_pairs = nuc_pairs.select(cell_lab[nuc_pairs.flat] == nuc_pairs.obj + 1)  # inside own cell
    nuc_pairs, nuc_lab, nuc_d = owned_pairs(nuc_pairs, n_cells, n_pixels)

    cell_soft = soft_mask(cell_d, cell_lab, cell_r)
    nuc_soft = soft_mask(nuc_d, nuc_lab, nuc_r)
    owner = np.maximum(cell_lab.astype(np.int64) - 1, 0)
    in_cell = cell_lab > 0

    # per-cell textures and spots (evaluated on the winning pair of every pixel)
    cyto_waves, cyto_phases = object_texture(rng, n_cells, 2, frequency=(0.4, 1.3))
    cyto_tex = np.zeros(n_pixels)
    cyto_tex[cell_pairs.flat] = evaluate_texture(cell_pairs, cyto_waves, cyto_phases)
    nuc_waves, nuc_phases = object_texture(rng, n_cells, 2, frequency=(0.7, 1.8))
    nuc_tex = np.zeros(n_pixels)
    nuc_tex[nuc_pairs.flat] = evaluate_texture(nuc_pairs, nuc_waves, nuc_phases)
    ring_waves, ring_phases = object_texture(rng, n_cells, 2, frequency=(0.15, 0.45), n_waves=4)
    ring_tex = np.zeros(n_pixels)
    ring_tex[cell_pairs.flat] = evaluate_texture(cell_pairs, ring_waves, ring_phases)

    vesicles = _vesicles(rng, shape, cells, patterns == 3, (0.5, 0.93))
    nucleoli_dna = rng.uniform(0.3, 0.55, size=(n_cells, 3))
    nucleoli_pos = rng.uniform(-0.4, 0.4, size=(n_cells, 3, 2)) * nuclei.semi_axes[:, None]
    nucleoli_sigma = rng.uniform(1.2, 2.0, size=(n_cells, 3))
    nucleoli_at = to_image_frame(nuclei, nucleoli_pos)
    dips = splat_spots(shape, nucleoli_at, nucleoli_sigma, nucleoli_dna).ravel()
    nucleolar_weight = np.where(
        (patterns == 4)[:, None], rng.uniform(1.5, 3.0, size=(n_cells, 3)), 0.0
    )
    nucleolar = splat_spots(shape, nucleoli_at, nucleoli_sigma * 0.8, nucleolar_weight).ravel()

    # protein signal per pattern, each cell with its own leakage and expression level
    leak = rng.uniform(0.04, 0.18, size=n_cells)[owner]
    nuc_leak = rng.uniform(0.05, 0.3, size=n_cells)[owner]
    cyto = cell_soft * (1.0 - nuc_soft)
    thin_edge = 1.0 - 0.45 * np.where(in_cell, cell_d, 1.0) ** 2
    ring_width = rng.uniform(0.8, 1.6, size=n_cells)[owner]
    depth = (1.0 - np.where(in_cell, cell_d, 1.0)) * cell_r[owner]
    ring = np.exp(-((depth / ring_width) ** 2)) * in_cell
    p = patterns[owner]
    nuclear = nuc_soft * np.clip(1 + 0.25 * nuc_tex, 0.3, None) * np.clip(1 - dips, 0.3, None)
    protein = np.select(
        [p == 0, p == 1, p == 2, p == 3, p == 4],
        [
            nuclear + leak * cyto,
            cyto * thin_edge * np.clip(1 + 0.25 * cyto_tex, 0.2, None) + nuc_leak * nuc_soft,
            1.2 * ring * np.clip(1 + 0.45 * ring_tex, 0.1, None) + leak * cell_soft,
            vesicles * (1.0 - 0.7 * nuc_soft) + 1.5 * leak * cyto,
            nucleolar * nuc_soft + 0.15 * nuc_soft + 0.5 * leak * cyto,
        ],
    )
    protein = protein * in_cell * np.exp(rng.normal(0.0, 0.3, size=n_cells))[owner]
    dna = nuc_soft * np.clip(1 + line.texture * nuc_tex, 0.2, None) * np.clip(1 - dips, 0.3, None)
    dna = dna * line.brightness * effect * np.exp(rng.normal(0.0, 0.15, size=n_cells))[owner]

    illum = illumination(shape, rng, mic.vignetting)
    pixel_size = {"y": PIXEL_UM, "x": PIXEL_UM}
    expression = float(np.exp(rng.normal(0.0, 0.6)))  # varies ~10-fold between crops
    channels = [
        acquire(
            rng,
            protein.reshape(shape),
            mic,
            pixel_size,
            illum,
            0.3 * smooth_field(shape, rng),
            exposure=expression * effect,
        ),
        acquire(rng, dna.reshape(shape), mic, pixel_size, illum, 0.3 * smooth_field(shape, rng)),
    ]
    return np.stack(channels)


def _vesicles(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cells: Objects,
    active: np.ndarray,
    radial: tuple[float, float],
) -> np.ndarray:
    """Diffraction-limited vesicles inside the cells flagged ``active`` (flat image)."""
    n = len(cells)
    count = np.where(active, rng.integers(12, _MAX_SPOTS + 1, size=n), 0)
    rho = np.sqrt(rng.uniform(radial[0] ** 2, radial[1] ** 2, size=(n, _MAX_SPOTS)))
    theta = rng.uniform(0, 2 * np.pi, size=(n, _MAX_SPOTS))
    pos = np.stack(
        [
            rho * np.cos(theta) * cells.semi_axes[:, 0:1],
            rho * np.sin(theta) * cells.semi_axes[:, 1:2],
        ],
        axis=2,
    )
    sigma = rng.uniform(0.7, 1.1, size=(n, _MAX_SPOTS))
    weight = np.exp(rng.normal(0.3, 0.4, size=(n, _MAX_SPOTS)))
    weight = weight * (np.arange(_MAX_SPOTS)[None, :] < count[:, None])
    return splat_spots(shape, to_image_frame(cells, pos), sigma, weight).ravel()
