"""Paired transmitted-light and fluorescence images for label-free prediction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cellbench.store.sample import Sample

from ._common import (
    CELL_LINES,
    MICROSCOPES,
    PIXEL_UM,
    Microscope,
    ParamCheck,
    acquire,
    illumination,
    plate_effect,
    plate_layout,
    public_metadata,
    sample_rng,
    smooth_field,
)
from ._shapes import (
    blur,
    evaluate_texture,
    object_pairs,
    object_texture,
    owned_pairs,
    per_pixel,
    place_centers,
    random_objects,
    soft_mask,
    splat_spots,
    to_image_frame,
)

#: Input channel of :func:`label_free` (phase-contrast-like transmitted light).
LABEL_FREE_CHANNELS = ("phase",)

#: Target channels of :func:`label_free` (fluorescence of the same field).
LABEL_FREE_TARGETS = ("Hoechst", "membrane")

#: Transmitted-light photons relative to the fluorescence photon budget of a microscope.
_TRANSMITTED_GAIN = 8.0

#: Spatial scale (pixels) of the phase-contrast halo (the phase ring's low-pass cut-off).
_HALO_SIGMA = 6.0

_MAX_SPOTS = 30


def label_free(
    n_images: int = 24,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    density: float = 0.5,
    n_plates: int = 4,
) -> list[Sample]:
    """Generate transmitted-light images paired with fluorescence of the same cells.

    Each field holds adherent cells (irregular outlines, touching in colonies) with a nucleus,
    nucleoli and cytoplasmic granules. The *input* is a phase-contrast-like image formed from
    the optical path difference (cell thickness x refractive index): cells are dark on a bright,
    unevenly lit background, surrounded by the bright halo of phase contrast (modelled as the
    path difference minus its low-pass, ``sigma`` 6 px), nuclei are thicker and nucleoli and
    lipid-droplet-like granules are dense, all at low contrast with little noise. The
    *targets* are two fluorescence channels of the same cells: a Hoechst-like DNA stain
    (brightness set by each cell's DNA content, 1x to 2x, which the phase image does not
    reveal; dark nucleoli; chromatin texture) and a membrane stain (a thin ring at every cell
    outline, bright along cell-cell contacts). Granules appear in phase only, DNA content in
    Hoechst only, and both modalities have their own blur and noise, so the mapping is
    learnable (positions and shapes are shared) but not a pixel-wise function.

    Args:
        n_images: Number of image pairs.
        shape: ``(y, x)`` field of view in pixels (0.65 µm each).
        seed: Non-negative seed; the same seed gives bit-identical samples.
        density: Target fraction of the field covered by cells (0 to 0.8).
        n_plates: Number of plates the fields are spread over.

    Returns:
        Samples ``labelfree-0000``, ... with ``image`` uint16 ``(1, y, x)`` camera counts
        (channel ``phase``) and ``target`` float32 ``(2, y, x)`` (channels
        :data:`LABEL_FREE_TARGETS`): offset-subtracted, gain-corrected fluorescence divided by
        the microscope's photon budget, so a typical nucleus or membrane reads about 1 and the
        background about 0.05-0.1; the targets keep their shot and read noise, as real
        acquisitions do. Metadata: ``source``, ``plate``, ``well``, ``site``, ``cell_line``,
        ``microscope``, ``n_cells``.

    Raises:
        ValidationError: Listing every invalid argument.
    """
    check = ParamCheck("cellbench.synthetic.label_free")
    check.integer("n_images", n_images, 1)
    check.shape("shape", shape, 2, 32)
    check.integer("seed", seed, 0)
    check.number("density", density, 0.0, 0.8)
    check.integer("n_plates", n_plates, 1)
    check.raise_if_any()
    shape = (int(shape[0]), int(shape[1]))
    samples = []
    for i, meta in enumerate(plate_layout(n_images, n_plates)):
        rng = sample_rng(seed, "label-free", i)
        effect = plate_effect(seed, "label-free", meta["plate_index"])
        image, target, n_cells = _pair(
            rng, shape, meta["cell_line"], meta["microscope"], density, effect
        )
        samples.append(
            Sample(
                id=f"labelfree-{i:04d}",
                image=image,
                axes="cyx",
                channel_names=list(LABEL_FREE_CHANNELS),
                pixel_size={"y": PIXEL_UM, "x": PIXEL_UM},
                metadata=public_metadata(meta, n_cells=n_cells),
                target=target,
                target_channel_names=list(LABEL_FREE_TARGETS),
            )
        )
    return samples


def _pair(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell_line: str,
    microscope: str,
    density: float,
    effect: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One field: ``(phase image (1, y, x) uint16, target (2, y, x) float32, n_cells)``."""
    line = CELL_LINES[cell_line]
    mic = MICROSCOPES[microscope]
    n_pixels = shape[0] * shape[1]

    # cells, touching in colonies, and a nucleus inside each
    radius_px = line.cell_radius_um / PIXEL_UM
    margin = 0.5 * radius_px
    lo, hi = np.array([-margin, -margin]), np.array(shape, dtype=float) + margin
    count = rng.poisson(density * float(np.prod(hi - lo)) / (np.pi * radius_px**2))
    radius = radius_px * np.exp(rng.normal(0.0, 0.15, size=count))
    centers, index = place_centers(rng, lo, hi, radius, clustering=0.5, spacing=(0.7, 0.95))
    radius = radius[index]
    n = index.size
    cells = random_objects(
        rng, centers, radius, rng.uniform(1.0, 1.8, size=n), rng.uniform(0.08, 0.16, size=n)
    )
    nuc_r = radius * rng.uniform(0.36, 0.48, size=n)
    shift = rng.uniform(0, 0.2, size=n) * radius
    shift_angle = rng.uniform(0, 2 * np.pi, size=n)
    unit = np.stack([np.sin(shift_angle), np.cos(shift_angle)], 1)
    nuclei = random_objects(
        rng, centers + shift[:, None] * unit, nuc_r, rng.uniform(1.0, 1.4, size=n), 0.05
    )
    cell_pairs, cell_lab, cell_d = owned_pairs(object_pairs(shape, cells), n, n_pixels)
    nuc_pairs = object_pairs(shape, nuclei)
    nuc_pairs = nuc_pairs.select(cell_lab[nuc_pairs.flat] == nuc_pairs.obj + 1)
    nuc_pairs, nuc_lab, nuc_d = owned_pairs(nuc_pairs, n, n_pixels)
    in_cell = cell_lab > 0
    cell_soft = soft_mask(cell_d, cell_lab, radius)
    nuc_soft = soft_mask(nuc_d, nuc_lab, nuc_r)
    n_cells = int(np.unique(cell_lab[in_cell]).size)

    # shared structures: nucleoli (dense in phase, DNA-poor in Hoechst), textures
    nucleoli_pos = rng.uniform(-0.4, 0.4, size=(n, 3, 2)) * nuclei.semi_axes[:, None]
    nucleoli_sigma = rng.uniform(1.2, 2.0, size=(n, 3))
    nucleoli_weight = rng.uniform(0.5, 1.0, size=(n, 3)) * (rng.random((n, 3)) < 0.8)
    nucleoli_at = to_image_frame(nuclei, nucleoli_pos)
    nucleoli = splat_spots(shape, nucleoli_at, nucleoli_sigma, nucleoli_weight).ravel()
    waves, phases = object_texture(rng, n, 2, frequency=(0.7, 1.8))
    chromatin = np.zeros(n_pixels)
    chromatin[nuc_pairs.flat] = evaluate_texture(nuc_pairs, waves, phases)
    cyto_waves, cyto_phases = object_texture(rng, n, 2, frequency=(0.3, 1.0))
    cyto_tex = np.zeros(n_pixels)
    cyto_tex[cell_pairs.flat] = evaluate_texture(cell_pairs, cyto_waves, cyto_phases)

    # phase only: lipid-droplet-like granules in the cytoplasm
    n_granules = rng.integers(3, _MAX_SPOTS + 1, size=n)
    rho = np.sqrt(rng.uniform(0.25, 0.85, size=(n, _MAX_SPOTS)))
    theta = rng.uniform(0, 2 * np.pi, size=(n, _MAX_SPOTS))
    granule_pos = np.stack(
        [
            rho * np.cos(theta) * cells.semi_axes[:, 0:1],
            rho * np.sin(theta) * cells.semi_axes[:, 1:2],
        ],
        axis=2,
    )
    granule_weight = rng.uniform(0.3, 0.8, size=(n, _MAX_SPOTS)) * (
        np.arange(_MAX_SPOTS)[None, :] < n_granules[:, None]
    )
    granule_sigma = rng.uniform(0.7, 1.2, size=(n, _MAX_SPOTS))
    granules = splat_spots(
        shape, to_image_frame(cells, granule_pos), granule_sigma, granule_weight
    ).ravel()

    # optical path difference -> phase contrast with halo
    thickness = per_pixel(rng.uniform(0.6, 1.0, size=n), cell_lab)
    bulge = per_pixel(rng.uniform(0.4, 0.7, size=n), cell_lab)
    lamella = 1.0 - 0.6 * np.where(in_cell, cell_d, 1.0) ** 2
    opd = cell_soft * thickness * lamella * (1.0 + 0.08 * cyto_tex)
    opd = opd + nuc_soft * bulge * (1.0 - 0.5 * np.where(nuc_lab > 0, nuc_d, 1.0) ** 2)
    opd = opd + 0.35 * nucleoli * nuc_soft + granules * (1.0 - nuc_soft) * cell_soft
    opd = opd.reshape(shape)
    contrast = rng.uniform(0.35, 0.5)
    transmitted = 1.0 - contrast * (opd - blur(opd, _HALO_SIGMA)) - 0.04 * opd
    transmitted = np.clip(transmitted, 0.05, None)
    optics = replace(mic, photons=mic.photons * _TRANSMITTED_GAIN, background=0.0, haze=0.0)
    pixel_size = {"y": PIXEL_UM, "x": PIXEL_UM}
    tl_illum = illumination(shape, rng, 0.5 * mic.vignetting + 0.1)
    image = acquire(rng, transmitted, optics, pixel_size, tl_illum)[None]

    # fluorescence targets of the same cells
    dna_content = rng.choice([1.0, 1.5, 2.0], p=[0.55, 0.2, 0.25], size=n)
    dna_content = dna_content * np.exp(rng.normal(0.0, 0.08, size=n))
    hoechst = (
        nuc_soft
        * per_pixel(dna_content, cell_lab)
        * np.clip(1.0 + line.texture * chromatin, 0.2, None)
        * np.clip(1.0 - 0.5 * nucleoli, 0.3, None)
    )
    ring_width = per_pixel(rng.uniform(0.9, 1.5, size=n), cell_lab)
    depth = (1.0 - np.where(in_cell, cell_d, 1.0)) * per_pixel(radius, cell_lab)
    ring = np.exp(-((depth / ring_width) ** 2)) * in_cell
    membrane = ring * np.clip(1.0 + 0.3 * cyto_tex, 0.3, None) + 0.06 * cell_soft
    fl_illum = illumination(shape, rng, mic.vignetting)
    target = np.stack(
        [
            _normalised(
                acquire(
                    rng,
                    signal.reshape(shape) * stain * effect,
                    mic,
                    pixel_size,
                    fl_illum,
                    0.3 * smooth_field(shape, rng),
                ),
                mic,
            )
            for signal, stain in ((hoechst, line.brightness), (membrane, 1.0))
        ]
    )
    return image, target, n_cells


def _normalised(counts: np.ndarray, mic: Microscope) -> np.ndarray:
    """Camera counts back to fluorophore units: offset removed, per electron, per photon budget."""
    out = (counts.astype(np.float64) - mic.offset) / mic.gain / mic.photons
    return out.astype(np.float32)
