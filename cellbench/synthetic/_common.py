"""Shared pieces of the synthetic generators: seeding, plate layout, microscopes, camera."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from cellbench.errors import ValidationError

from ._shapes import blur

#: Lateral pixel size of every generator, in micrometres (a 20x objective on a 6.5 µm camera).
PIXEL_UM = 0.65

#: Stream keys: one fixed integer per generator, mixed into every seed (never ``hash()``).
STREAM_KEYS = {
    "nuclei": 1,
    "nuclei-3d": 2,
    "protein-localisation": 3,
    "timelapse": 4,
    "label-free": 5,
}


def _stream(seed: int, stream: str, purpose: int, index: int) -> np.random.Generator:
    entropy = [seed, STREAM_KEYS[stream]]
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(purpose, index)))


def sample_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """Independent generator for sample ``index`` of a generator stream.

    Seeds come from :class:`numpy.random.SeedSequence` over ``(seed, stream key)`` with the
    spawn key ``(0, index)``: sample ``i`` does not depend on how many samples are requested
    (only on its plate-layout metadata), and no global state or Python ``hash()`` is involved.
    """
    return _stream(seed, stream, 0, index)


def dataset_rng(seed: int, stream: str) -> np.random.Generator:
    """Generator for dataset-level draws (e.g. shuffling the class of every sample)."""
    return _stream(seed, stream, 2, 0)


@dataclass(frozen=True)
class Microscope:
    """Optics and camera of one simulated instrument (one evaluation group).

    Attributes:
        name: Group name stored in ``metadata["microscope"]``.
        psf_sigma_um: Lateral standard deviation of the Gaussian PSF, in µm.
        psf_sigma_z_um: Axial standard deviation of the Gaussian PSF, in µm.
        photons: Expected photo-electrons per pixel for a unit-brightness object.
        background: Background (autofluorescence, stray light) relative to unit brightness.
        haze: Fraction of the signal spread as a broad glow (out-of-focus light, scatter).
        read_noise: Camera read noise in electrons (rms).
        gain: Analogue-to-digital units per electron.
        offset: Camera offset (counts added to every pixel).
        vignetting: Relative illumination drop at the field corners.
    """

    name: str
    psf_sigma_um: float
    psf_sigma_z_um: float
    photons: float
    background: float
    haze: float
    read_noise: float
    gain: float
    offset: int
    vignetting: float


#: The two simulated instruments: a bright, blurrier widefield with a hazy background and a
#: dimmer, sharper spinning disk with a noisier camera.
MICROSCOPES: dict[str, Microscope] = {
    "widefield-A": Microscope(
        name="widefield-A",
        psf_sigma_um=0.85,
        psf_sigma_z_um=2.4,
        photons=900.0,
        background=0.10,
        haze=0.12,
        read_noise=2.0,
        gain=0.6,
        offset=100,
        vignetting=0.35,
    ),
    "spinning-disk-B": Microscope(
        name="spinning-disk-B",
        psf_sigma_um=0.45,
        psf_sigma_z_um=1.2,
        photons=160.0,
        background=0.04,
        haze=0.02,
        read_noise=5.0,
        gain=1.5,
        offset=400,
        vignetting=0.15,
    ),
}


@dataclass(frozen=True)
class CellLine:
    """Morphology of one simulated cell line (one evaluation group).

    Attributes:
        name: Group name stored in ``metadata["cell_line"]``.
        nucleus_radius_um: Mean equivalent radius of an interphase nucleus, in µm.
        nucleus_aspect_max: Largest major/minor axis ratio of a nucleus.
        irregularity: Amplitude of the boundary harmonics of the nucleus outline.
        texture: Relative amplitude of the chromatin texture.
        brightness: Relative nuclear stain brightness.
        cell_radius_um: Mean equivalent radius of the whole cell, in µm.
    """

    name: str
    nucleus_radius_um: float
    nucleus_aspect_max: float
    irregularity: float
    texture: float
    brightness: float
    cell_radius_um: float


#: Simulated cell lines: large, flat, elongated U2OS-like nuclei and smaller, rounder,
#: brighter and more textured HeLa-like nuclei.
CELL_LINES: dict[str, CellLine] = {
    "U2OS": CellLine("U2OS", 6.5, 1.7, 0.06, 0.22, 1.0, 13.0),
    "HeLa": CellLine("HeLa", 5.0, 1.35, 0.09, 0.32, 1.3, 10.5),
}

#: Images per well in the simulated plate layout.
SITES_PER_WELL = 3


def plate_layout(n: int, n_plates: int) -> list[dict[str, Any]]:
    """Metadata of ``n`` fields of view spread over ``n_plates`` plates.

    Consecutive samples fill plate after plate (contiguous blocks), each well holding
    :data:`SITES_PER_WELL` sites. Plates alternate between the microscopes of
    :data:`MICROSCOPES` (odd plates ``widefield-A``, even plates ``spinning-disk-B``) and wells
    alternate between the cell lines of :data:`CELL_LINES`, starting with the first line on
    plates 1-2, with the second on plates 3-4, and so on: every cell line is imaged on every
    microscope even when each plate holds a single well (small datasets), so the two groupings
    are not confounded.

    Returns:
        One dict per sample with ``source``, ``plate``, ``well``, ``site``, ``cell_line``,
        ``microscope`` and the internal ``plate_index``.
    """
    n_plates = max(1, min(n_plates, n))
    microscopes = list(MICROSCOPES)
    lines = list(CELL_LINES)
    out = []
    for i in range(n):
        plate = i * n_plates // n
        first = -(-plate * n // n_plates)  # first sample index of this plate
        well_index, site = divmod(i - first, SITES_PER_WELL)
        row = "ABCDEFGH"[(well_index // 12) % 8]
        out.append(
            {
                "source": "synthetic",
                "plate": f"plate-{plate + 1:02d}",
                "well": f"{row}{well_index % 12 + 1:02d}",
                "site": site + 1,
                "cell_line": lines[(plate // 2 + well_index) % len(lines)],
                "microscope": microscopes[plate % len(microscopes)],
                "plate_index": plate,
            }
        )
    return out


def plate_effect(seed: int, stream: str, plate_index: int) -> float:
    """Multiplicative stain-intensity batch effect of one plate (lognormal, sd 0.12)."""
    rng = _stream(seed, stream, 1, plate_index)
    return float(np.exp(rng.normal(0.0, 0.12)))


def public_metadata(meta: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The metadata stored on a sample (layout without internal keys, plus ``extra``)."""
    out = {k: v for k, v in meta.items() if k != "plate_index"}
    out.update(extra)
    return out


def smooth_field(
    shape: tuple[int, ...], rng: np.random.Generator, max_cycles: float = 1.5, n_waves: int = 6
) -> np.ndarray:
    """Smooth random field of unit standard deviation (sum of low-frequency plane waves).

    Args:
        shape: Output shape.
        rng: Random generator.
        max_cycles: Largest number of periods across the field.
        n_waves: Number of plane waves.
    """
    n_dim = len(shape)
    k = rng.uniform(-max_cycles, max_cycles, size=(n_waves, n_dim)) * 2 * np.pi
    phase = np.exp(1j * rng.uniform(0, 2 * np.pi, size=n_waves))
    # every wave is separable: exp(i k.r) is the outer product of one exponential per axis
    factors = [
        np.exp(1j * k[:, d, None] * (np.arange(s) / max(s, 1))[None, :])
        for d, s in enumerate(shape)
    ]
    factors[0] = factors[0] * phase[:, None]
    subscripts = ",".join(f"w{a}" for a in "abc"[:n_dim]) + "->" + "abc"[:n_dim]
    field = np.einsum(subscripts, *factors).real
    return field * np.sqrt(2.0 / n_waves)


def illumination(shape: tuple[int, int], rng: np.random.Generator, vignetting: float) -> np.ndarray:
    """Uneven illumination: off-centre vignetting, a linear gradient and slow ripples (max 1)."""
    h, w = shape
    yy = (np.arange(h)[:, None] + 0.5) / h - 0.5
    xx = (np.arange(w)[None, :] + 0.5) / w - 0.5
    cy, cx = rng.uniform(-0.15, 0.15, size=2)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
    gy, gx = rng.uniform(-0.08, 0.08, size=2)
    field = (1.0 - vignetting * r2) * (1.0 + gy * yy + gx * xx)
    field = field * (1.0 + 0.03 * smooth_field(shape, rng, max_cycles=1.0, n_waves=3))
    return field / field.max()


def psf_sigma(mic: Microscope, pixel_size: dict[str, float]) -> tuple[float, ...]:
    """PSF standard deviations in pixels along ``[z,] y, x`` for the given pixel sizes."""
    lateral = mic.psf_sigma_um / pixel_size["x"]
    if "z" in pixel_size:
        return (mic.psf_sigma_z_um / pixel_size["z"], lateral, lateral)
    return (lateral, lateral)


def acquire(
    rng: np.random.Generator,
    signal: np.ndarray,
    mic: Microscope,
    pixel_size: dict[str, float],
    illum: np.ndarray,
    background_texture: np.ndarray | None = None,
    exposure: float = 1.0,
) -> np.ndarray:
    """Image a noiseless signal (unit brightness ~ 1) with a microscope: uint16 counts.

    The signal is blurred by the Gaussian PSF, a broad haze is added (``mic.haze``), the
    result and the background are scaled by the illumination field and the exposure, then
    photon shot noise (Poisson), camera gain, read noise (Gaussian) and the offset are applied
    and the counts are rounded and clipped to the uint16 range.

    Args:
        rng: Random generator.
        signal: Noiseless fluorophore density, ``[z,] y, x``.
        mic: The microscope.
        pixel_size: Physical pixel sizes (``x``, ``y`` and optionally ``z`` µm).
        illum: Illumination field over ``y, x`` (broadcast over ``z``).
        background_texture: Optional relative variation of the background (same shape).
        exposure: Multiplies the expected photon count (e.g. an expression level).

    Returns:
        Camera counts, uint16, same shape as ``signal``.
    """
    sigma = psf_sigma(mic, pixel_size)
    sharp = blur(signal, sigma)
    if mic.haze > 0:
        glow = blur(signal, tuple(8.0 * s for s in sigma))
        sharp = (1.0 - mic.haze) * sharp + mic.haze * glow
    bg = mic.background * (
        1.0 if background_texture is None else np.clip(1.0 + background_texture, 0.2, None)
    )
    expected = mic.photons * exposure * illum * (sharp + bg)
    electrons = rng.poisson(np.maximum(expected, 0.0))
    read = rng.normal(0.0, mic.read_noise * mic.gain, size=signal.shape)
    counts = electrons * mic.gain + mic.offset + read
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


class ParamCheck:
    """Collects every problem with a generator's arguments and raises them together."""

    def __init__(self, context: str) -> None:
        self.context = context
        self.problems: list[str] = []

    def integer(self, name: str, value: Any, minimum: int) -> None:
        """Require an integer ``>= minimum``."""
        if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
            self.problems.append(f"{name} must be an integer >= {minimum}, got {value!r}")

    def number(self, name: str, value: Any, low: float, high: float) -> None:
        """Require a real number in ``[low, high]``."""
        if isinstance(value, bool) or not isinstance(value, Real) or not low <= value <= high:
            self.problems.append(f"{name} must be a number in [{low}, {high}], got {value!r}")

    def shape(self, name: str, value: Any, ndim: int, minimum: int) -> None:
        """Require a tuple of ``ndim`` integers, each ``>= minimum``."""
        ok = (
            isinstance(value, Sequence)
            and len(value) == ndim
            and all(
                isinstance(v, Integral) and not isinstance(v, bool) and v >= minimum for v in value
            )
        )
        if not ok:
            self.problems.append(
                f"{name} must be {ndim} integers >= {minimum} (e.g. {(minimum * 4,) * ndim}), "
                f"got {value!r}"
            )

    def choice(self, name: str, value: Any, allowed: Sequence[Any]) -> None:
        """Require one of ``allowed``."""
        if value not in allowed:
            self.problems.append(f"{name} must be one of {list(allowed)}, got {value!r}")

    def add(self, problem: str) -> None:
        """Record a free-form problem."""
        self.problems.append(problem)

    def raise_if_any(self) -> None:
        """Raise :class:`ValidationError` listing every recorded problem."""
        if self.problems:
            raise ValidationError(self.problems, self.context)
