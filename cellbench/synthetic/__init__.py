"""Deterministic synthetic fluorescence microscopy for every cellbench task.

Dataset card
============

**What it is.** Generators of realistic-looking, fully annotated microscopy for the five
cellbench tasks, built without any download. They back the ``synthetic-*`` catalog entries,
the test suite and the CPU demo. Every generator returns ``list[Sample]``
(:class:`cellbench.store.sample.Sample`), every sample passes ``sample.problems() == []``, and
``split`` is left at its default: splits are assigned by :mod:`cellbench.splits`.

=========================  ======================================  ===========================
generator (GENERATORS key) task(s)                                 defaults give
=========================  ======================================  ===========================
``nuclei``                 instance + semantic segmentation        24 images 128x128, ~23
                                                                   nuclei each (U2OS ~18,
                                                                   HeLa ~27), ~9% mitotic
``nuclei-3d``              3D instance + semantic segmentation     12 volumes 16x64x64
                                                                   (z 2.0 µm), ~39 nuclei
``protein-localisation``   classification (4 classes, balanced)    200 two-channel 64x64 crops
``timelapse``              tracking with divisions                 2 sequences of 20 frames
                                                                   128x128: 12-24 cells per
                                                                   frame, 24-38 tracks, 4-8
                                                                   divisions per sequence
``label-free``             augmented microscopy                    24 phase/fluorescence pairs
                                                                   128x128, ~10 cells each
=========================  ======================================  ===========================

Generation is vectorised with NumPy (no per-pixel or per-object Python loops; the time-lapse
simulation loops over frames), so tests can build small datasets on the fly.

**What is simulated.**

- *Objects*: star-convex nuclei and cells (ellipse or ellipsoid with random boundary
  harmonics), sizes and shapes by cell line, placed by a soft hard-core process with colonies,
  so neighbours touch and some overlap geometrically (intensities add up, labels never
  overlap: a contested pixel goes to the object whose centre is relatively closer). Chromatin
  texture and nucleoli are attached to each object and move and turn with it. Mitotic nuclei
  are smaller, about twice as bright, elongated, ragged and coarsely textured.
- *Acquisition*: fluorophore density -> Gaussian PSF (lateral and axial) -> broad haze
  (out-of-focus light and scatter, as a fraction of the signal) -> uneven illumination
  (off-centre vignetting, gradient, slow ripples) plus textured background -> Poisson shot
  noise -> camera gain, Gaussian read noise and offset -> uint16 counts.
- *Groups* (``metadata``, for per-group and worst-group evaluation): ``source``
  (``"synthetic"``), ``plate``, ``well``, ``site``, ``cell_line`` (``U2OS``: large, flat,
  elongated nuclei; ``HeLa``: smaller, rounder, brighter, more textured) and ``microscope``
  (``widefield-A``: bright, blurrier, hazy background, strong vignetting; ``spinning-disk-B``:
  about 5x fewer photons and a noisier camera, so a higher relative noise, but a sharper PSF
  and less haze). Plates alternate microscopes and every cell line is imaged on both; each
  plate also has its own staining intensity (a lognormal batch effect, sd 0.12).
- *Time-lapse*: persistent random-walk migration with repulsion, divisions (mitotic rounding
  before, two smaller daughters after), cells entering and leaving the field, photobleaching;
  the CTC track table is derived from the label images themselves (see
  :func:`~cellbench.synthetic.timelapse.timelapse`).
- *Label-free*: phase contrast computed from the optical path difference (cell thickness,
  nuclear bulge, dense nucleoli and granules) with the halo of a phase ring; fluorescence
  targets (DNA, membrane) of the same cells, with their own noise and information the phase
  image lacks (DNA content).

**What is not simulated (known differences from real microscopy).**

- The PSF is an idealised Gaussian, the same everywhere; no Airy rings, aberrations, depth-
  dependent blur or field curvature. Out-of-focus light is a 2D glow, not light from other
  planes of a real 3D sample; 3D volumes have no spherical aberration or depth attenuation.
- No spectral bleed-through, no camera fixed-pattern noise, hot pixels or saturation (counts
  are clipped at 65535 but defaults stay far below), no EM gain noise, no dust or debris.
- No focus drift within or between images, no stitching or registration errors.
- Shapes are star-convex: no kidney-shaped, lobed or fragmented (apoptotic) nuclei, no
  micronuclei, no blebs; cells are flat 2D outlines; protrusions are not modelled.
- Cells do not die; tracks end only by leaving the field (or, rarely, by being squeezed below
  the minimum visible size). Motion is a random walk, not chemotaxis or collective migration.
- Phase contrast is a linear high-pass model of the optical path: no shade-off, no
  interference fringes, no DIC shear, no condenser misalignment.
- Annotations are perfect (pixel-exact, derived from the simulation); real ground truth has
  annotator variability that caps attainable scores.

**Determinism.** Each sample draws from its own :class:`numpy.random.Generator` seeded through
:class:`numpy.random.SeedSequence` by ``(seed, generator key, sample index)``; nothing uses
global random state or Python's ``hash()``, so the same arguments give bit-identical arrays
in every run and process. Per-pixel geometry uses only arithmetic and square roots (IEEE
exact); across different CPUs or NumPy builds the remaining transcendental functions (a few
``exp``/``cos`` per texture and spot) could differ in the last bit and, very rarely, change
a camera count by one.

**License.** Generated data; no third-party content.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cellbench.store.sample import Sample

from ._common import CELL_LINES, MICROSCOPES, PIXEL_UM, CellLine, Microscope
from .labelfree import LABEL_FREE_CHANNELS, LABEL_FREE_TARGETS, label_free
from .nuclei import NUCLEI_CLASSES, nuclei
from .protein import PROTEIN_CHANNELS, PROTEIN_CLASSES, PROTEIN_PATTERNS, protein_localisation
from .timelapse import TIMELAPSE_CHANNELS, timelapse

__all__ = [
    "CELL_LINES",
    "GENERATORS",
    "LABEL_FREE_CHANNELS",
    "LABEL_FREE_TARGETS",
    "MICROSCOPES",
    "NUCLEI_CLASSES",
    "PIXEL_UM",
    "PROTEIN_CHANNELS",
    "PROTEIN_CLASSES",
    "PROTEIN_PATTERNS",
    "TIMELAPSE_CHANNELS",
    "CellLine",
    "GeneratorSpec",
    "Microscope",
    "generate",
    "label_free",
    "nuclei",
    "protein_localisation",
    "timelapse",
]


@dataclass(frozen=True)
class GeneratorSpec:
    """A named synthetic generator with its default arguments.

    Attributes:
        function: The generator.
        defaults: Keyword arguments it is called with (every parameter, explicitly).
        tasks: cellbench task names the samples carry targets for.
        description: One line for listings and dataset cards.
    """

    function: Callable[..., list[Sample]]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    description: str = ""

    def __call__(self, **overrides: Any) -> list[Sample]:
        """Run the generator with :attr:`defaults` updated by ``overrides``."""
        return self.function(**{**self.defaults, **overrides})


def _spec(
    function: Callable[..., list[Sample]],
    tasks: tuple[str, ...],
    description: str,
    **overrides: Any,
) -> GeneratorSpec:
    """Spec whose defaults are the function's signature defaults updated by ``overrides``."""
    params = inspect.signature(function).parameters
    defaults = {name: p.default for name, p in params.items()}
    unknown = set(overrides) - set(defaults)
    if unknown:  # a programming error in this module, caught at import
        raise TypeError(f"{function.__name__} has no parameters {sorted(unknown)}")
    defaults.update(overrides)
    return GeneratorSpec(function, MappingProxyType(defaults), tasks, description)


#: Short name -> generator and its default arguments (read-only).
GENERATORS: Mapping[str, GeneratorSpec] = MappingProxyType(
    {
        "nuclei": _spec(
            nuclei,
            ("instance-segmentation", "semantic-segmentation"),
            "2D fluorescent nuclei, instance labels and interphase/mitotic classes",
            shape=(128, 128),
            ndim=2,
        ),
        "nuclei-3d": _spec(
            nuclei,
            ("instance-segmentation", "semantic-segmentation"),
            "3D fluorescent nuclei volumes (anisotropic z), instance and class labels",
            n_images=12,
            shape=(16, 64, 64),
            ndim=3,
        ),
        "protein-localisation": _spec(
            protein_localisation,
            ("classification",),
            "single-cell crops, protein + DAPI channels, localisation class",
        ),
        "timelapse": _spec(
            timelapse,
            ("tracking", "instance-segmentation"),
            "time-lapse of migrating, dividing nuclei with a CTC track table",
        ),
        "label-free": _spec(
            label_free,
            ("augmented-microscopy",),
            "phase contrast paired with Hoechst and membrane fluorescence",
        ),
    }
)


def generate(name: str, **overrides: Any) -> list[Sample]:
    """Run the generator registered as ``name`` with its defaults updated by ``overrides``.

    Raises:
        DatasetNotFoundError: When ``name`` is not a key of :data:`GENERATORS`.
    """
    if name not in GENERATORS:
        from cellbench.errors import DatasetNotFoundError

        raise DatasetNotFoundError(
            f"no synthetic generator {name!r}; known: {', '.join(sorted(GENERATORS))}"
        )
    return GENERATORS[name](**overrides)
