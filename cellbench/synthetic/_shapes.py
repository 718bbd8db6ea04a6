"""Star-convex objects and their vectorised rasterisation (shared by every generator).

An object is an ellipse (2D) or ellipsoid (3D) with a rotation in the ``yx`` plane whose
boundary is modulated by a few angular harmonics, so nuclei and cells look irregular rather
than geometric. Rasterising evaluates, for every (object, pixel) pair inside the object's
bounding box, the *normalised radius* ``d`` (0 at the centre, 1 on the boundary). All pairs of
all objects are built at once as one ragged array (no loop over objects or pixels); a pixel
covered by several objects belongs to the one with the smallest ``d``, so labels never overlap
while intensities can still add up where objects overlap geometrically.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Number of boundary harmonics per object (orders 2, 3, ...).
N_HARMONICS = 4


@dataclass
class Objects:
    """A set of star-convex objects, one row per object (coordinates in pixels).

    Attributes:
        centers: ``(n, D)`` centre coordinates in axis order (``[z,] y, x``).
        semi_axes: ``(n, D)`` semi-axes in pixels: ``[z,]`` then the two in-plane axes
            (major along ``angle``, minor across it).
        angle: ``(n,)`` in-plane rotation in radians.
        harm_amp: ``(n, N_HARMONICS)`` relative amplitude of boundary harmonics 2, 3, ...
        harm_phase: ``(n, N_HARMONICS)`` phases of the harmonics.
    """

    centers: np.ndarray
    semi_axes: np.ndarray
    angle: np.ndarray
    harm_amp: np.ndarray
    harm_phase: np.ndarray

    def __len__(self) -> int:
        return int(self.centers.shape[0])

    @property
    def ndim(self) -> int:
        """Spatial dimensionality (2 or 3)."""
        return int(self.centers.shape[1])

    def subset(self, index: np.ndarray) -> Objects:
        """Return the objects selected by a boolean mask or an index array."""
        return Objects(
            self.centers[index],
            self.semi_axes[index],
            self.angle[index],
            self.harm_amp[index],
            self.harm_phase[index],
        )

    @staticmethod
    def concat(parts: list[Objects], ndim: int) -> Objects:
        """Concatenate several object sets (an empty list gives an empty set)."""
        if not parts:
            return Objects(
                np.zeros((0, ndim)),
                np.zeros((0, ndim)),
                np.zeros(0),
                np.zeros((0, N_HARMONICS)),
                np.zeros((0, N_HARMONICS)),
            )
        return Objects(
            np.concatenate([p.centers for p in parts]),
            np.concatenate([p.semi_axes for p in parts]),
            np.concatenate([p.angle for p in parts]),
            np.concatenate([p.harm_amp for p in parts]),
            np.concatenate([p.harm_phase for p in parts]),
        )


def random_objects(
    rng: np.random.Generator,
    centers: np.ndarray,
    radius: np.ndarray,
    aspect: np.ndarray,
    irregularity: float | np.ndarray,
    z_radius: np.ndarray | None = None,
) -> Objects:
    """Draw shapes for objects at given centres.

    Args:
        rng: Random generator.
        centers: ``(n, D)`` centres in pixels.
        radius: ``(n,)`` equivalent in-plane radius (geometric mean of the in-plane semi-axes).
        aspect: ``(n,)`` ratio of major to minor in-plane semi-axis (>= 1).
        irregularity: Scale of the boundary harmonics (0 gives ellipses; 0.05 is a slightly
            irregular nucleus, 0.12 a spread cell). Scalar or ``(n,)``.
        z_radius: ``(n,)`` semi-axis along ``z`` in pixels (3D only).

    Returns:
        The objects.
    """
    n = centers.shape[0]
    major = radius * np.sqrt(aspect)
    minor = radius / np.sqrt(aspect)
    axes = [major, minor] if z_radius is None else [z_radius, major, minor]
    irr = np.broadcast_to(np.asarray(irregularity, dtype=float), (n,))
    # higher harmonics get smaller amplitudes (1/k falloff), as for real nuclear outlines
    falloff = 1.0 / np.arange(1, N_HARMONICS + 1)
    amp = irr[:, None] * falloff[None, :] * rng.uniform(0.3, 1.0, size=(n, N_HARMONICS))
    return Objects(
        centers=np.asarray(centers, dtype=float),
        semi_axes=np.stack(axes, axis=1),
        angle=rng.uniform(0.0, np.pi, size=n),
        harm_amp=amp,
        harm_phase=rng.uniform(0.0, 2 * np.pi, size=(n, N_HARMONICS)),
    )


@dataclass
class Pairs:
    """Every (object, pixel) pair with the pixel inside the object (``d < d_max``).

    Attributes:
        obj: ``(m,)`` object index of each pair.
        flat: ``(m,)`` flat (raveled) pixel index.
        d: ``(m,)`` normalised radius (0 at the centre, 1 on the boundary).
        local: ``(m, D)`` pixel offset from the object centre in the object's own frame
            (``[z,]`` then along the major and the minor axis), for textures that move with it.
        shape: The image shape the flat indices refer to.
    """

    obj: np.ndarray
    flat: np.ndarray
    d: np.ndarray
    local: np.ndarray
    shape: tuple[int, ...]

    def select(self, keep: np.ndarray) -> Pairs:
        """Return the pairs where ``keep`` (a boolean mask over pairs) is true."""
        return Pairs(self.obj[keep], self.flat[keep], self.d[keep], self.local[keep], self.shape)


def box_pixels(
    shape: tuple[int, ...], centers: np.ndarray, half: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Enumerate the pixels of many boxes at once, as one ragged array.

    Args:
        shape: Image shape.
        centers: ``(n, D)`` box centres (pixels, may lie outside the image).
        half: ``(n, D)`` half-sizes; boxes are clipped to the image.

    Returns:
        ``(m,)`` box index of every pixel and ``(m, D)`` its integer coordinates, ordered by
        box then raster order.
    """
    ndim = len(shape)
    dims = np.asarray(shape)
    lo = np.clip(np.floor(centers - half).astype(np.int64), 0, dims)
    hi = np.clip(np.ceil(centers + half).astype(np.int64) + 1, 0, dims)
    size = np.maximum(hi - lo, 0)
    counts = size.prod(axis=1)
    total = int(counts.sum())
    obj = np.repeat(np.arange(centers.shape[0]), counts)
    local_index = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    coords = np.empty((total, ndim), dtype=np.int64)
    rest = local_index
    for axis in range(ndim - 1, -1, -1):  # unravel per box, last axis fastest
        extent = size[obj, axis]
        coords[:, axis] = lo[obj, axis] + rest % extent
        rest = rest // extent
    return obj, coords


def object_pairs(shape: tuple[int, ...], objects: Objects, d_max: float = 1.0) -> Pairs:
    """Enumerate every (object, pixel) pair with normalised radius below ``d_max``.

    The bounding boxes of all objects are enumerated as one ragged array, so the cost is
    proportional to the total bounding-box area and no Python loop runs over objects.

    Args:
        shape: Image shape (``(y, x)`` or ``(z, y, x)``).
        objects: The objects (same dimensionality as ``shape``).
        d_max: Keep pairs with ``d < d_max`` (values > 1 include a rim outside the object).

    Returns:
        The pairs, ordered by object then pixel.
    """
    ndim = len(shape)
    bound = 1.0 + objects.harm_amp.sum(axis=1)
    inplane = objects.semi_axes[:, -2:].max(axis=1) * bound * d_max
    if ndim == 2:
        half = np.stack([inplane, inplane], axis=1)
    else:
        half = np.stack([objects.semi_axes[:, 0] * bound * d_max, inplane, inplane], axis=1)
    obj, coords = box_pixels(shape, objects.centers, half)
    if obj.size == 0:
        return Pairs(obj, obj.copy(), np.zeros(0), np.zeros((0, ndim)), shape)
    offset = coords - objects.centers[obj]
    cos_a = np.cos(objects.angle)[obj]
    sin_a = np.sin(objects.angle)[obj]
    dy, dx = offset[:, -2], offset[:, -1]
    along = dx * cos_a + dy * sin_a
    across = -dx * sin_a + dy * cos_a
    su = along / objects.semi_axes[obj, -2]
    sv = across / objects.semi_axes[obj, -1]
    plane2 = su * su + sv * sv
    rho2 = plane2
    if ndim == 3:
        sz = offset[:, 0] / objects.semi_axes[obj, 0]
        rho2 = rho2 + sz * sz
    # cheap rejection: beyond the largest possible boundary radius nothing can be inside
    near = np.flatnonzero(rho2 < (d_max * bound[obj]) ** 2)
    obj, coords, offset = obj[near], coords[near], offset[near]
    along, across, su, sv = along[near], across[near], su[near], sv[near]
    plane = np.sqrt(plane2[near])
    # boundary modulation 1 + sum_k a_k cos(k theta + phi_k), with cos(k theta) from powers of
    # the unit complex number exp(i theta) (only multiplications, no per-pixel trigonometry)
    safe = np.where(plane > 0, plane, 1.0)
    unit = np.where(plane > 0, (su + 1j * sv) / safe, 1.0 + 0j)
    power = unit * unit
    rotor = np.exp(1j * objects.harm_phase)
    modulation = np.ones(obj.size)
    for k in range(N_HARMONICS):  # a fixed handful of harmonics, each over all pairs
        modulation += objects.harm_amp[obj, k] * (power * rotor[obj, k]).real
        power = power * unit
    d = np.sqrt(rho2[near]) / modulation
    keep = d < d_max
    local = (
        np.stack([along, across], axis=1)
        if ndim == 2
        else np.stack([offset[:, 0], along, across], axis=1)
    )
    flat = np.ravel_multi_index(tuple(coords[keep].T), shape)
    return Pairs(obj[keep], flat, d[keep], local[keep], shape)


def winners(pairs: Pairs) -> np.ndarray:
    """Return, for every covered pixel, the index of the pair with the smallest ``d``.

    Ties are broken by the lower object index (the sort is stable), so the result is
    deterministic.
    """
    if pairs.flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((pairs.d, pairs.flat))
    sorted_flat = pairs.flat[order]
    first = np.ones(sorted_flat.size, dtype=bool)
    first[1:] = sorted_flat[1:] != sorted_flat[:-1]
    return order[first]


def paint(pairs: Pairs, n_objects: int, inside: float = 1.0) -> np.ndarray:
    """Paint a label image (object index + 1, 0 = background) from pairs.

    Args:
        pairs: Pairs from :func:`object_pairs`.
        n_objects: Number of objects (selects the integer dtype).
        inside: Only pairs with ``d < inside`` are painted.

    Returns:
        Label image of shape ``pairs.shape``.
    """
    sub = pairs.select(pairs.d < inside) if inside < np.inf else pairs
    win = winners(sub)
    dtype = np.uint16 if n_objects < 2**16 else np.uint32
    labels = np.zeros(int(np.prod(pairs.shape)), dtype=dtype)
    labels[sub.flat[win]] = sub.obj[win] + 1
    return labels.reshape(pairs.shape)


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest face-connected component of every label (others become 0).

    Objects whose visible part is cut in two by a neighbour would otherwise be one label on
    two disconnected blobs, which no annotator would draw.
    """
    from skimage.measure import label as connected

    components = connected(labels, background=0, connectivity=1)
    n_comp = int(components.max())
    if n_comp == 0:
        return labels
    flat_comp = components.ravel()
    flat_lab = labels.ravel()
    comp_label = np.zeros(n_comp + 1, dtype=np.int64)
    comp_label[flat_comp] = flat_lab
    if np.unique(comp_label[1:]).size == n_comp:
        return labels  # every label is a single component
    comp_size = np.bincount(flat_comp, minlength=n_comp + 1)
    comp_size[0] = 0
    # for every label, the component with the largest size wins (ties: lowest component id)
    order = np.lexsort((-np.arange(n_comp + 1), comp_size, comp_label))
    best = np.zeros(int(comp_label.max()) + 1, dtype=np.int64)
    best[comp_label[order]] = order
    keep = np.zeros(n_comp + 1, dtype=bool)
    keep[best[comp_label[1:]]] = True
    keep[0] = False
    out = labels.copy()
    out.ravel()[~keep[flat_comp]] = 0
    return out


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to ``1..n`` in order of the old ids; return the new labels and the old ids."""
    old = np.unique(labels)
    old = old[old > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=labels.dtype)
    lut[old] = np.arange(1, old.size + 1, dtype=labels.dtype)
    return lut[labels], old


def object_texture(
    rng: np.random.Generator,
    n_objects: int,
    ndim: int,
    frequency: tuple[float, float] = (0.5, 1.3),
    n_waves: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw per-object random plane waves for a texture attached to each object.

    Args:
        rng: Random generator.
        n_objects: Number of objects.
        ndim: Spatial dimensionality.
        frequency: Range of angular spatial frequencies in radians per pixel.
        n_waves: Number of plane waves per object.

    Returns:
        ``(n, n_waves, ndim)`` wave vectors and ``(n, n_waves)`` phases, for
        :func:`evaluate_texture`.
    """
    direction = rng.normal(size=(n_objects, n_waves, ndim))
    direction /= np.linalg.norm(direction, axis=2, keepdims=True) + 1e-12
    magnitude = rng.uniform(*frequency, size=(n_objects, n_waves, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_objects, n_waves))
    return direction * magnitude, phase


def evaluate_texture(pairs: Pairs, waves: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Evaluate unit-variance object textures at every pair (moves and turns with the object)."""
    if pairs.obj.size == 0:
        return np.zeros(0)
    arg = np.einsum("mkd,md->mk", waves[pairs.obj], pairs.local) + phase[pairs.obj]
    return np.cos(arg).sum(axis=1) * np.sqrt(2.0 / waves.shape[1])


def place_centers(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    radius: np.ndarray,
    clustering: float = 0.4,
    spacing: tuple[float, float] = (0.8, 1.05),
    cluster_spread: float = 2.0,
    rounds: int = 6,
    scale: np.ndarray | None = None,
    existing: np.ndarray | None = None,
    existing_radius: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Place objects of given radii with a soft hard-core distance, in a few rounds.

    Each round draws two candidate positions per object still to place (a ``clustering``
    fraction around random colony centres, the rest uniform), drops candidates too close to
    objects already placed and thins the rest by Matérn type-II (a candidate survives when no
    conflicting candidate of another object has a smaller random mark); an object keeps its
    best surviving candidate. Two objects conflict when their distance is below
    ``u * (r_i + r_j)`` with ``u`` drawn per pair from ``spacing``; ``u < 1`` lets objects
    overlap geometrically, which gives touching and overlapping-looking clusters. Everything
    inside a round is vectorised; objects that find no room after ``rounds`` are dropped.

    Args:
        rng: Random generator.
        lo: ``(D,)`` lower corner of the region for centres.
        hi: ``(D,)`` upper corner.
        radius: ``(n,)`` radii of the objects to place.
        clustering: Fraction of candidates drawn around colony centres.
        spacing: Range of the per-pair hard-core factor.
        cluster_spread: Colony spread in units of the mean radius.
        rounds: Maximum number of rounds.
        scale: ``(D,)`` factors applied to coordinate differences before measuring distances
            (e.g. the z anisotropy); default isotropic.
        existing: ``(k, D)`` centres already present that new objects must respect.
        existing_radius: ``(k,)`` radii of the existing centres.

    Returns:
        Centres ``(m, D)`` of the placed objects and their indices ``(m,)`` into ``radius``
        (in increasing order).
    """
    lo = np.asarray(lo, dtype=float)
    hi = np.asarray(hi, dtype=float)
    ndim = lo.size
    radius = np.asarray(radius, dtype=float)
    scale = np.ones(ndim) if scale is None else np.asarray(scale, dtype=float)
    acc_c = np.zeros((0, ndim)) if existing is None else np.asarray(existing, dtype=float)
    acc_r = np.zeros(0) if existing_radius is None else np.asarray(existing_radius, dtype=float)
    placed_c: list[np.ndarray] = []
    placed_i: list[np.ndarray] = []
    pending = np.arange(radius.size)
    mean_r = float(radius.mean()) if radius.size else 1.0
    for _ in range(rounds):
        if pending.size == 0:
            break
        cand_obj = np.concatenate([pending, pending])
        n_cand = cand_obj.size
        cand = rng.uniform(lo, hi, size=(n_cand, ndim))
        n_clustered = round(clustering * n_cand)
        if n_clustered:
            n_colonies = max(1, n_clustered // 6)
            colonies = rng.uniform(lo, hi, size=(n_colonies, ndim))
            pick = rng.integers(0, n_colonies, size=n_clustered)
            spread = cluster_spread * mean_r / scale
            offsets = rng.normal(size=(n_clustered, ndim)) * spread
            cand[:n_clustered] = np.clip(colonies[pick] + offsets, lo, hi)
        cand_r = radius[cand_obj]
        if acc_r.size:
            dist = np.linalg.norm((cand[:, None, :] - acc_c[None, :, :]) * scale, axis=2)
            factor = rng.uniform(*spacing, size=dist.shape)
            ok = ~(dist < factor * (cand_r[:, None] + acc_r[None, :])).any(axis=1)
            cand, cand_r, cand_obj = cand[ok], cand_r[ok], cand_obj[ok]
        if cand_obj.size == 0:
            continue
        dist = np.linalg.norm((cand[:, None, :] - cand[None, :, :]) * scale, axis=2)
        factor = np.triu(rng.uniform(*spacing, size=dist.shape), 1)
        factor = factor + factor.T  # one factor per pair
        conflict = dist < factor * (cand_r[:, None] + cand_r[None, :])
        conflict &= cand_obj[:, None] != cand_obj[None, :]
        mark = rng.permutation(cand_obj.size)
        beaten = (conflict & (mark[None, :] < mark[:, None])).any(axis=1)
        survivors = np.flatnonzero(~beaten)
        survivors = survivors[np.argsort(mark[survivors], kind="stable")]
        _, first = np.unique(cand_obj[survivors], return_index=True)
        chosen = survivors[first]  # one candidate per object, the one with the smallest mark
        placed_c.append(cand[chosen])
        placed_i.append(cand_obj[chosen])
        acc_c = np.concatenate([acc_c, cand[chosen]])
        acc_r = np.concatenate([acc_r, cand_r[chosen]])
        pending = np.setdiff1d(pending, cand_obj[chosen])
    if not placed_i:
        return np.zeros((0, ndim)), np.zeros(0, dtype=np.int64)
    centers = np.concatenate(placed_c)
    index = np.concatenate(placed_i)
    order = np.argsort(index, kind="stable")
    return centers[order], index[order]


def smoothstep(x: np.ndarray) -> np.ndarray:
    """Cubic smooth step of ``x`` clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def to_image_frame(objects: Objects, local: np.ndarray, z_scale: float = 1.0) -> np.ndarray:
    """Map points given in each object's own frame to image coordinates.

    Args:
        objects: The objects.
        local: ``(n, k, D)`` points per object in the frame of :attr:`Pairs.local`
            (``[z,]`` along the major axis, along the minor axis), with ``z`` multiplied by
            ``z_scale``.
        z_scale: Lateral pixels per ``z`` step used in ``local``.

    Returns:
        ``(n, k, D)`` image coordinates.
    """
    cos_a = np.cos(objects.angle)[:, None]
    sin_a = np.sin(objects.angle)[:, None]
    along, across = local[..., -2], local[..., -1]
    dy = along * sin_a + across * cos_a
    dx = along * cos_a - across * sin_a
    parts = [dy, dx] if objects.ndim == 2 else [local[..., 0] / z_scale, dy, dx]
    return objects.centers[:, None, :] + np.stack(parts, axis=-1)


def splat_spots(
    shape: tuple[int, ...],
    centers: np.ndarray,
    sigma: np.ndarray,
    weight: np.ndarray,
    z_scale: float = 1.0,
) -> np.ndarray:
    """Render Gaussian spots, each only over its own small window (no full-image evaluation).

    Args:
        shape: Image shape.
        centers: ``(..., D)`` spot centres in image coordinates.
        sigma: ``(...)`` lateral standard deviations in pixels.
        weight: ``(...)`` amplitudes; spots with weight 0 are skipped.
        z_scale: Lateral pixels per ``z`` step (3D): the spot is round in physical space.

    Returns:
        The rendered image, shape ``shape``.
    """
    ndim = len(shape)
    active = weight.ravel() != 0
    centers = centers.reshape(-1, ndim)[active]
    sigma = sigma.ravel()[active]
    weight = weight.ravel()[active]
    scale = np.ones(ndim)
    if ndim == 3:
        scale[0] = z_scale
    half = 3.0 * sigma[:, None] / scale[None, :]
    spot, coords = box_pixels(shape, centers, half)
    diff = (coords - centers[spot]) * scale
    r2 = (diff * diff).sum(axis=1)
    value = weight[spot] * np.exp(-r2 / (2.0 * sigma[spot] ** 2))
    flat = np.ravel_multi_index(tuple(coords.T), shape)
    return np.bincount(flat, weights=value, minlength=int(np.prod(shape))).reshape(shape)


def blur(image: np.ndarray, sigma: tuple[float, ...] | float) -> np.ndarray:
    """Gaussian blur (the idealised point-spread function), edges reflected."""
    return ndimage.gaussian_filter(image, sigma=sigma, mode="reflect", truncate=3.5)


def owned_pairs(
    pairs: Pairs, n_objects: int, n_pixels: int
) -> tuple[Pairs, np.ndarray, np.ndarray]:
    """Keep only the winning pair of every pixel.

    Args:
        pairs: Pairs from :func:`object_pairs`.
        n_objects: Number of objects.
        n_pixels: Number of pixels of the image.

    Returns:
        The winning pairs, the flat label image (object index + 1) and the flat normalised
        radius of the owning object (``inf`` on background).
    """
    win = winners(pairs)
    owned = Pairs(pairs.obj[win], pairs.flat[win], pairs.d[win], pairs.local[win], pairs.shape)
    labels = paint(owned, n_objects).ravel()
    d = np.full(n_pixels, np.inf)
    d[owned.flat] = owned.d
    return owned, labels, d


def soft_mask(d: np.ndarray, labels: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Soft object mask from :func:`owned_pairs` output (1 inside, ~1.5 px smooth fall-off)."""
    if radius.size == 0:
        return np.zeros(labels.shape)
    width = np.clip(1.5 / radius, 0.03, 0.5)[np.maximum(labels.astype(np.int64) - 1, 0)]
    return np.where(labels > 0, smoothstep((1.0 - np.minimum(d, 1.0)) / width), 0.0)


def per_pixel(values: np.ndarray, labels: np.ndarray, background: float = 1.0) -> np.ndarray:
    """Spread per-object values over a label image (``background`` where the label is 0)."""
    return np.concatenate([[background], np.asarray(values, dtype=float)])[labels]
