"""Fluorescent nuclei (2D images or 3D volumes) with instance and semantic labels."""

from __future__ import annotations

import numpy as np

from cellbench.store.sample import Sample

from ._common import (
    CELL_LINES,
    MICROSCOPES,
    PIXEL_UM,
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
    Objects,
    evaluate_texture,
    keep_largest_component,
    object_pairs,
    object_texture,
    paint,
    place_centers,
    random_objects,
    relabel_sequential,
    smoothstep,
    splat_spots,
    to_image_frame,
)

#: Semantic classes of :func:`nuclei` (index = class id in ``Sample.semantic``).
NUCLEI_CLASSES = ("background", "interphase", "mitotic")

#: Default shapes of :func:`nuclei` for ``ndim=2`` (y, x) and ``ndim=3`` (z, y, x).
NUCLEI_DEFAULT_SHAPES = {2: (128, 128), 3: (16, 64, 64)}

#: Fewer visible pixels (2D) or voxels (3D) than this and a nucleus is not drawn at all.
MIN_OBJECT_SIZE = {2: 12, 3: 30}

#: Height of an adherent nucleus relative to its in-plane radius (3D).
NUCLEUS_FLATNESS = 0.6


def nuclei(
    n_images: int = 24,
    shape: tuple[int, ...] | None = None,
    seed: int = 0,
    ndim: int = 2,
    density: float = 0.3,
    mitotic_fraction: float = 0.1,
    clustering: float = 0.4,
    n_plates: int = 4,
    z_step_um: float = 2.0,
) -> list[Sample]:
    """Generate fluorescent nuclei (DAPI/Hoechst-like) with instance and semantic targets.

    Nuclei are irregular ellipses (ellipsoids in 3D) of cell-line-dependent size, placed with
    a soft hard-core process that produces colonies, touching neighbours and overlapping-looking
    pairs (overlapping nuclei add their intensities; labels never overlap, the pixel goes to
    the nucleus whose centre is relatively closer). Each nucleus has a chromatin texture and
    darker nucleoli that move with it. About ``mitotic_fraction`` of the nuclei are mitotic:
    smaller, about twice as bright, more elongated and ragged, with coarse condensed texture.
    Images see uneven illumination, a Gaussian PSF, haze, Poisson shot noise, Gaussian read
    noise and a camera offset; the microscope (``widefield-A`` or ``spinning-disk-B``,
    alternating by plate) sets blur, haze, photon budget and read noise.

    Args:
        n_images: Number of images (one :class:`Sample` each).
        shape: ``(y, x)`` for ``ndim=2`` (default ``(128, 128)``) or ``(z, y, x)`` for
            ``ndim=3`` (default ``(16, 64, 64)``).
        seed: Non-negative seed; the same seed gives bit-identical samples.
        ndim: 2 for images ``(c, y, x)``, 3 for volumes ``(c, z, y, x)``.
        density: Target fraction of the field (volume in 3D) covered by nuclei, 0 to 0.6;
            crowding caps what is reached (about 0.4 in 2D).
        mitotic_fraction: Probability that a nucleus is mitotic (class 2).
        clustering: Fraction of nuclei drawn around colony centres (0 = uniform).
        n_plates: Number of plates the images are spread over (capped at ``n_images``).
        z_step_um: Voxel size along ``z`` in µm for ``ndim=3`` (lateral pixels are 0.65 µm).

    Returns:
        Samples ``nuclei-0000``, ... (``nuclei3d-0000``, ... for 3D) with ``image`` uint16
        ``(1, [z,] y, x)``, ``instances`` uint16 (0 = background, 1..n), ``semantic`` uint8
        (:data:`NUCLEI_CLASSES`), channel ``DAPI`` and metadata ``source``, ``plate``,
        ``well``, ``site``, ``cell_line``, ``microscope``, ``n_nuclei``, ``n_mitotic``.

    Raises:
        ValidationError: Listing every invalid argument.
    """
    check = ParamCheck("cellbench.synthetic.nuclei")
    check.integer("n_images", n_images, 1)
    check.integer("seed", seed, 0)
    check.choice("ndim", ndim, (2, 3))
    if ndim in (2, 3):
        shape = NUCLEI_DEFAULT_SHAPES[ndim] if shape is None else shape
        check.shape("shape", shape, ndim, 4 if ndim == 3 else 16)
    check.number("density", density, 0.0, 0.6)
    check.number("mitotic_fraction", mitotic_fraction, 0.0, 1.0)
    check.number("clustering", clustering, 0.0, 1.0)
    check.integer("n_plates", n_plates, 1)
    check.number("z_step_um", z_step_um, 0.1, 20.0)
    check.raise_if_any()
    assert shape is not None
    shape = tuple(int(s) for s in shape)
    stream = "nuclei" if ndim == 2 else "nuclei-3d"
    prefix = "nuclei" if ndim == 2 else "nuclei3d"
    layout = plate_layout(n_images, n_plates)
    samples = []
    for i, meta in enumerate(layout):
        rng = sample_rng(seed, stream, i)
        effect = plate_effect(seed, stream, meta["plate_index"])
        image, instances, semantic = _nuclei_image(
            rng,
            shape,
            CELL_LINES[meta["cell_line"]].name,
            MICROSCOPES[meta["microscope"]].name,
            density,
            mitotic_fraction,
            clustering,
            z_step_um,
            effect,
        )
        pixel_size = {"y": PIXEL_UM, "x": PIXEL_UM}
        if ndim == 3:
            pixel_size = {"z": float(z_step_um), **pixel_size}
        samples.append(
            Sample(
                id=f"{prefix}-{i:04d}",
                image=image,
                axes="cyx" if ndim == 2 else "czyx",
                channel_names=["DAPI"],
                pixel_size=pixel_size,
                metadata=public_metadata(
                    meta,
                    n_nuclei=int(instances.max()),
                    n_mitotic=int(np.unique(instances[semantic == 2]).size),
                ),
                instances=instances,
                semantic=semantic,
            )
        )
    return samples


def _nuclei_image(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    cell_line: str,
    microscope: str,
    density: float,
    mitotic_fraction: float,
    clustering: float,
    z_step_um: float,
    effect: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: ``(image (1, ...) uint16, instances, semantic)``."""
    line = CELL_LINES[cell_line]
    mic = MICROSCOPES[microscope]
    ndim = len(shape)
    z_scale = z_step_um / PIXEL_UM  # lateral pixels per z step
    radius_px = line.nucleus_radius_um / PIXEL_UM

    # how many nuclei: density x region / mean nucleus size (region includes a border margin)
    margin = 0.5 * radius_px
    lo = np.full(ndim, -margin)
    hi = np.asarray(shape, dtype=float) + margin
    if ndim == 3:
        z_margin = 0.3 * NUCLEUS_FLATNESS * radius_px / z_scale
        lo[0], hi[0] = -z_margin, shape[0] + z_margin
    mitotic_shrink = 0.65
    mean_r2 = radius_px**2 * (1 - mitotic_fraction * (1 - mitotic_shrink**2))
    if ndim == 2:
        mean_size = np.pi * mean_r2 * np.exp(2 * 0.15**2)
        region = float(np.prod(hi - lo))
    else:
        mean_size = 4 / 3 * np.pi * mean_r2 * NUCLEUS_FLATNESS * radius_px
        region = float(np.prod(hi - lo)) * z_scale
    count = int(rng.poisson(density * region / mean_size))

    mitotic = rng.random(count) < mitotic_fraction
    radius = radius_px * np.exp(rng.normal(0.0, 0.15, size=count))
    radius = np.where(mitotic, radius * mitotic_shrink, radius)
    scale = None if ndim == 2 else np.array([z_scale, 1.0, 1.0])
    centers, index = place_centers(rng, lo, hi, radius, clustering=clustering, scale=scale)
    mitotic, radius = mitotic[index], radius[index]
    n = index.size
    aspect = np.where(
        mitotic,
        rng.uniform(1.3, 2.3, size=n),
        rng.uniform(1.0, line.nucleus_aspect_max, size=n),
    )
    irregular = np.where(mitotic, 0.16, line.irregularity * rng.uniform(0.5, 1.5, size=n))
    z_radius = None if ndim == 2 else NUCLEUS_FLATNESS * radius / z_scale
    objects = random_objects(rng, centers, radius, aspect, irregular, z_radius)

    # labels: drop nuclei with too few visible pixels, then paint the rest without overlap
    pairs = object_pairs(shape, objects)
    first = paint(pairs, n)
    visible = np.bincount(first.ravel(), minlength=n + 1)[1:] >= MIN_OBJECT_SIZE[ndim]
    pairs = pairs.select(visible[pairs.obj])
    labels = keep_largest_component(paint(pairs, n))
    instances, _ = relabel_sequential(labels)
    class_lut = np.zeros(n + 1, dtype=np.uint8)
    class_lut[1:] = np.where(mitotic, 2, 1)
    semantic = class_lut[labels]

    # intensities: soft-edged dome x chromatin texture x nucleoli, summed over objects
    if ndim == 3:  # textures and spots live in isotropic (lateral pixel) units
        pairs.local = pairs.local * np.array([z_scale, 1.0, 1.0])
    brightness = line.brightness * effect * np.exp(rng.normal(0.0, 0.2, size=n))
    brightness = np.where(mitotic, brightness * 2.2, brightness)
    tex_amp = np.where(mitotic, 0.45, line.texture * rng.uniform(0.7, 1.3, size=n))
    waves, phases = object_texture(rng, n, ndim, frequency=(0.7, 1.8))
    coarse_waves, coarse_phases = object_texture(rng, n, ndim, frequency=(0.35, 0.7))
    # nucleoli: up to three darker spots per interphase nucleus
    k = 3
    spot_pos = rng.uniform(-0.45, 0.45, size=(n, k, ndim)) * _local_axes(objects, z_scale)[:, None]
    spot_sigma = rng.uniform(1.0, 1.8, size=(n, k))
    spot_depth = rng.uniform(0.25, 0.55, size=(n, k)) * (rng.random((n, k)) < 0.7)
    spot_depth[mitotic] = 0.0

    obj = pairs.obj
    edge_width = np.clip(1.2 / radius, 0.05, 0.5)[obj]
    profile = smoothstep((1.0 - pairs.d) / edge_width) * (1.0 - 0.25 * pairs.d**2)
    fine = evaluate_texture(pairs, waves, phases)
    coarse = evaluate_texture(pairs, coarse_waves, coarse_phases)
    texture = np.where(mitotic[obj], coarse, 0.75 * fine + 0.25 * coarse)
    spots = to_image_frame(objects, spot_pos, z_scale if ndim == 3 else 1.0)
    dips = splat_spots(shape, spots, spot_sigma, spot_depth, z_scale).ravel()[pairs.flat]
    value = (
        brightness[obj]
        * profile
        * np.clip(1.0 + tex_amp[obj] * texture, 0.15, None)
        * np.clip(1.0 - dips, 0.2, None)
    )
    signal = np.bincount(pairs.flat, weights=value, minlength=int(np.prod(shape)))
    signal = signal.reshape(shape)

    illum = illumination(shape[-2:], rng, mic.vignetting)
    bg_texture = 0.3 * smooth_field(shape, rng, max_cycles=2.0)
    image = acquire(rng, signal, mic, _pixel_sizes(ndim, z_step_um), illum, bg_texture)
    return image[None], instances, semantic


def _local_axes(objects: Objects, z_scale: float) -> np.ndarray:
    """Semi-axes of every object in isotropic local units, ``(n, D)``."""
    axes = objects.semi_axes.copy()
    if axes.shape[1] == 3:
        axes[:, 0] *= z_scale
    return axes


def _pixel_sizes(ndim: int, z_step_um: float) -> dict[str, float]:
    out = {"y": PIXEL_UM, "x": PIXEL_UM}
    if ndim == 3:
        out["z"] = z_step_um
    return out
