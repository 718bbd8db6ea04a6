"""Time-lapse of moving, dividing nuclei with a Cell Tracking Challenge track table."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    N_HARMONICS,
    Objects,
    Pairs,
    evaluate_texture,
    keep_largest_component,
    object_pairs,
    object_texture,
    paint,
    place_centers,
    smoothstep,
)

#: Channel of every time-lapse image (a live nuclear marker).
TIMELAPSE_CHANNELS = ("H2B-GFP",)

#: Frames before a division during which the mother looks mitotic (round, small, bright).
MITOSIS_FRAMES = 2

#: Radius of a newborn daughter relative to its mother (half the area).
DAUGHTER_SCALE = 1 / np.sqrt(2)

#: Frames a daughter takes to grow back to full size.
GROWTH_FRAMES = 10


def timelapse(
    n_sequences: int = 2,
    n_frames: int = 20,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    density: float = 0.2,
    division_rate: float = 0.03,
    min_cycle: int = 6,
    speed: float = 1.5,
    frame_interval_s: float = 300.0,
    min_pixels: int = 15,
    n_plates: int = 4,
) -> list[Sample]:
    """Generate time-lapse sequences of migrating, dividing nuclei with ground-truth tracks.

    Cells move by a persistent random walk (Ornstein-Uhlenbeck velocity, ``speed`` pixels per
    frame), repel each other so they do not pile up, and drift in and out of the field of view
    (the simulation runs on a larger area and new cells enter through its margin to keep the
    density). After ``min_cycle`` frames a cell divides with probability ``division_rate`` per
    frame: for :data:`MITOSIS_FRAMES` frames before the division the nucleus rounds up,
    shrinks and brightens, then two daughters (half the area, growing back over
    :data:`GROWTH_FRAMES` frames) appear next to it, pushed apart along a random axis.

    Labels never overlap (a pixel covered by two nuclei goes to the one whose centre is
    relatively closer). A nucleus with fewer than ``min_pixels`` pixels in the field of view
    (entering, leaving or squeezed by a neighbour) is neither drawn nor labelled in that frame.
    The track table is derived from the label images themselves: every maximal run of frames
    in which a cell is visible is one track, so every track is present in every frame from
    its start to its end, labels in a frame are exactly the tracks alive in it and ids are
    never reused; a cell that leaves and re-enters gets a new track with parent 0. A daughter
    track has the mother's id as parent when both daughters are visible right after the
    mother's last frame (otherwise both have parent 0), exactly as in CTC ``man_track.txt``.

    Args:
        n_sequences: Number of sequences (one :class:`Sample` each).
        n_frames: Frames per sequence (at least 2).
        shape: ``(y, x)`` field of view in pixels (0.65 µm each).
        seed: Non-negative seed; the same seed gives bit-identical samples.
        density: Target fraction of the area covered by nuclei at the start (0 to 0.5).
        division_rate: Probability per frame that a cell older than ``min_cycle`` frames
            divides (0 disables divisions).
        min_cycle: Frames a cell lives at least before it can divide (initial cells may
            divide earlier).
        speed: Random-walk speed in pixels per frame.
        frame_interval_s: Time between frames in seconds (stored as ``pixel_size["t"]``).
        min_pixels: Smallest visible size (pixels) of a labelled nucleus.
        n_plates: Number of plates the sequences are spread over.

    Returns:
        Samples ``timelapse-0000``, ... with ``image`` uint16 ``(t, 1, y, x)``, ``instances``
        ``(t, y, x)`` (uint16, uint32 beyond 65535 tracks) holding track ids, ``tracks`` int64
        ``(n, 4)`` rows ``track_id, start, end, parent`` and metadata ``source``, ``plate``,
        ``well``, ``site``, ``cell_line``, ``microscope``, ``n_tracks``, ``n_divisions``.

    Raises:
        ValidationError: Listing every invalid argument.
    """
    check = ParamCheck("cellbench.synthetic.timelapse")
    check.integer("n_sequences", n_sequences, 1)
    check.integer("n_frames", n_frames, 2)
    check.shape("shape", shape, 2, 32)
    check.integer("seed", seed, 0)
    check.number("density", density, 0.0, 0.5)
    check.number("division_rate", division_rate, 0.0, 1.0)
    check.integer("min_cycle", min_cycle, 1)
    check.number("speed", speed, 0.0, 20.0)
    check.number("frame_interval_s", frame_interval_s, 1e-3, 1e6)
    check.integer("min_pixels", min_pixels, 1)
    check.integer("n_plates", n_plates, 1)
    check.raise_if_any()
    shape = (int(shape[0]), int(shape[1]))
    samples = []
    for i, meta in enumerate(plate_layout(n_sequences, n_plates)):
        rng = sample_rng(seed, "timelapse", i)
        sim = _simulate(
            rng,
            shape,
            n_frames,
            CELL_LINES[meta["cell_line"]].nucleus_radius_um / PIXEL_UM,
            density,
            division_rate,
            min_cycle,
            speed,
        )
        entity_maps = _entity_labels(sim, shape, min_pixels)
        instances, tracks = _tracks(sim, entity_maps)
        image = _render(
            rng,
            sim,
            entity_maps,
            meta["cell_line"],
            meta["microscope"],
            plate_effect(seed, "timelapse", meta["plate_index"]),
        )
        samples.append(
            Sample(
                id=f"timelapse-{i:04d}",
                image=image,
                axes="tcyx",
                channel_names=list(TIMELAPSE_CHANNELS),
                pixel_size={"t": float(frame_interval_s), "y": PIXEL_UM, "x": PIXEL_UM},
                metadata=public_metadata(
                    meta,
                    n_tracks=len(tracks),
                    n_divisions=int(np.unique(tracks[tracks[:, 3] > 0, 3]).size),
                ),
                instances=instances,
                tracks=tracks,
            )
        )
    return samples


@dataclass
class _Population:
    """Every cell ever simulated (one row per cell; ``pos``/``vel`` are the current state)."""

    pos: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    vel: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    radius: np.ndarray = field(default_factory=lambda: np.zeros(0))
    aspect: np.ndarray = field(default_factory=lambda: np.zeros(0))
    angle: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spin: np.ndarray = field(default_factory=lambda: np.zeros(0))
    harm_amp: np.ndarray = field(default_factory=lambda: np.zeros((0, N_HARMONICS)))
    harm_phase: np.ndarray = field(default_factory=lambda: np.zeros((0, N_HARMONICS)))
    brightness: np.ndarray = field(default_factory=lambda: np.zeros(0))
    birth: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    grown: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    divide_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mother: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def add(
        self, rng: np.random.Generator, pos: np.ndarray, vel: np.ndarray, **fixed: np.ndarray
    ) -> None:
        """Append cells at ``pos``.

        ``fixed`` must hold ``radius``, ``birth``, ``divide_at``, ``mother`` and ``grown``; it
        may hold any other attribute, and those not given are drawn.
        """
        n = pos.shape[0]
        falloff = 1.0 / np.arange(1, N_HARMONICS + 1)
        drawn = {
            "aspect": rng.uniform(1.0, 1.5, size=n),
            "angle": rng.uniform(0, np.pi, size=n),
            "spin": rng.normal(0.0, 0.03, size=n),
            "harm_amp": 0.06 * falloff * rng.uniform(0.3, 1.0, (n, N_HARMONICS)),
            "harm_phase": rng.uniform(0, 2 * np.pi, size=(n, N_HARMONICS)),
            "brightness": np.exp(rng.normal(0.0, 0.2, size=n)),
        }
        for name, value in drawn.items():
            setattr(self, name, np.concatenate([getattr(self, name), fixed.get(name, value)]))
        for name in ("radius", "birth", "divide_at", "mother", "grown"):
            setattr(self, name, np.concatenate([getattr(self, name), fixed[name]]))
        self.pos = np.concatenate([self.pos, pos])
        self.vel = np.concatenate([self.vel, vel])
        self.alive = np.concatenate([self.alive, np.ones(n, bool)])


@dataclass
class _Simulation:
    """A simulated sequence: the population and, per frame, the cells present and their shape."""

    cells: _Population
    frames: list[tuple[np.ndarray, Objects, np.ndarray]]  # (cell ids, shapes, mitotic flag)
    n_frames: int


def _division_times(
    rng: np.random.Generator, birth: np.ndarray, rate: float, min_cycle: int
) -> np.ndarray:
    """Last frame of each cell before it divides (a huge number when it never does).

    The wait after ``min_cycle`` frames is geometric (constant hazard ``rate``). Cells present
    at the start or entering the field use ``min_cycle=0``: their age is unknown and the
    geometric wait is memoryless.
    """
    never = np.iinfo(np.int64).max // 4
    if rate <= 0:
        return np.full(birth.shape, never, np.int64)
    return birth + min_cycle + rng.geometric(rate, size=birth.shape) - 1


def _simulate(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_frames: int,
    radius_px: float,
    density: float,
    rate: float,
    min_cycle: int,
    speed: float,
) -> _Simulation:
    """Run the cell simulation on the field of view plus a margin."""
    margin = 3.0 * radius_px
    lo = np.array([-margin, -margin])
    hi = np.array(shape, dtype=float) + margin
    area = float(np.prod(hi - lo))
    target = round(density * area / (np.pi * radius_px**2))
    cells = _Population()

    radius = radius_px * np.exp(rng.normal(0.0, 0.12, size=rng.poisson(target)))
    centers, index = place_centers(rng, lo, hi, radius, clustering=0.3, spacing=(0.95, 1.15))
    n0 = index.size
    cells.add(
        rng,
        centers,
        rng.normal(0.0, speed / np.sqrt(2), size=(n0, 2)),
        radius=radius[index],
        birth=np.zeros(n0, np.int64),
        divide_at=_division_times(rng, np.zeros(n0, np.int64), rate, 0),
        mother=np.full(n0, -1, np.int64),
        grown=np.ones(n0, bool),
    )

    persistence = 0.8
    frames = []
    for t in range(n_frames):
        if t > 0:
            # divisions: mothers whose last frame was t - 1 end, two daughters start at t
            dividing = np.flatnonzero(cells.alive & (cells.divide_at == t - 1))
            if dividing.size:
                cells.alive[dividing] = False
                axis = rng.uniform(0, np.pi, size=dividing.size)
                unit = np.stack([np.sin(axis), np.cos(axis)], 1)
                offset = 0.45 * cells.radius[dividing, None] * unit
                pos = np.concatenate([cells.pos[dividing] + offset, cells.pos[dividing] - offset])
                kick = 0.5 * speed * unit
                vel = np.concatenate([cells.vel[dividing] + kick, cells.vel[dividing] - kick])
                mothers = np.concatenate([dividing, dividing])
                birth = np.full(mothers.size, t, np.int64)
                cells.add(
                    rng,
                    pos,
                    vel,
                    radius=cells.radius[mothers] * np.exp(rng.normal(0.0, 0.05, mothers.size)),
                    birth=birth,
                    divide_at=_division_times(rng, birth, rate, min_cycle),
                    mother=mothers,
                    grown=np.zeros(mothers.size, bool),
                    brightness=cells.brightness[mothers]
                    * np.exp(rng.normal(0, 0.05, mothers.size)),
                )
            # motion: persistent random walk, then pairwise repulsion
            live = np.flatnonzero(cells.alive)
            noise = rng.normal(0.0, speed / np.sqrt(2), size=(live.size, 2))
            cells.vel[live] = persistence * cells.vel[live] + np.sqrt(1 - persistence**2) * noise
            cells.pos[live] += cells.vel[live]
            cells.angle[live] += cells.spin[live]
            _repel(cells, live, _current_radius(cells, live, t))
            # cells that drifted out of the simulated area are gone
            out = ((cells.pos[live] < lo - radius_px) | (cells.pos[live] > hi + radius_px)).any(1)
            cells.alive[live[out]] = False
            # new cells enter through the margin to keep the density
            deficit = target - int(cells.alive.sum())
            n_new = int(rng.poisson(0.3 * deficit)) if deficit > 0 else 0
            if n_new:
                pos, vel = _entering(rng, n_new, lo, hi, speed)
                birth = np.full(n_new, t, np.int64)
                cells.add(
                    rng,
                    pos,
                    vel,
                    radius=radius_px * np.exp(rng.normal(0.0, 0.12, size=n_new)),
                    birth=birth,
                    divide_at=_division_times(rng, birth, rate, 0),
                    mother=np.full(n_new, -1, np.int64),
                    grown=np.ones(n_new, bool),
                )
        live = np.flatnonzero(cells.alive)
        frames.append(_shapes_at(cells, live, t))
    return _Simulation(cells, frames, n_frames)


def _current_radius(cells: _Population, idx: np.ndarray, t: int) -> np.ndarray:
    """Equivalent radius at frame ``t``: daughters grow back, mitotic cells shrink."""
    age = t - cells.birth[idx]
    growth = np.where(
        cells.grown[idx],
        1.0,
        DAUGHTER_SCALE + (1 - DAUGHTER_SCALE) * np.minimum(age / GROWTH_FRAMES, 1.0),
    )
    mitotic = (cells.divide_at[idx] - t) < MITOSIS_FRAMES
    return cells.radius[idx] * growth * np.where(mitotic, 0.8, 1.0)


def _shapes_at(
    cells: _Population, idx: np.ndarray, t: int
) -> tuple[np.ndarray, Objects, np.ndarray]:
    """Shapes of the cells ``idx`` at frame ``t``."""
    radius = _current_radius(cells, idx, t)
    mitotic = (cells.divide_at[idx] - t) < MITOSIS_FRAMES
    aspect = np.where(mitotic, 1.0 + 0.3 * (cells.aspect[idx] - 1.0), cells.aspect[idx])
    major = radius * np.sqrt(aspect)
    minor = radius / np.sqrt(aspect)
    shapes = Objects(
        centers=cells.pos[idx].copy(),
        semi_axes=np.stack([major, minor], 1),
        angle=cells.angle[idx].copy(),
        harm_amp=cells.harm_amp[idx],
        harm_phase=cells.harm_phase[idx],
    )
    return idx, shapes, mitotic


def _repel(cells: _Population, idx: np.ndarray, radius: np.ndarray, iterations: int = 3) -> None:
    """Push overlapping cells apart (vectorised over all pairs, a few relaxation steps)."""
    if idx.size < 2:
        return
    pos = cells.pos[idx]
    reach = 0.9 * (radius[:, None] + radius[None, :])
    for _ in range(iterations):
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt((diff**2).sum(axis=2))
        np.fill_diagonal(dist, np.inf)
        overlap = np.clip(reach - dist, 0.0, None)
        direction = diff / np.maximum(dist, 1e-6)[:, :, None]
        pos = pos + 0.5 * (overlap[:, :, None] * direction).sum(axis=1)
    cells.pos[idx] = pos


def _entering(
    rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray, speed: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions on the edge of the simulated area and inward velocities for new cells."""
    side = rng.integers(0, 4, size=n)
    u = rng.uniform(0, 1, size=n)
    y = np.where(side == 0, lo[0], np.where(side == 1, hi[0], lo[0] + u * (hi[0] - lo[0])))
    x = np.where(side == 2, lo[1], np.where(side == 3, hi[1], lo[1] + u * (hi[1] - lo[1])))
    inward = np.stack(
        [
            np.select([side == 0, side == 1], [1.0, -1.0], 0.0),
            np.select([side == 2, side == 3], [1.0, -1.0], 0.0),
        ],
        1,
    )
    vel = inward * speed + rng.normal(0.0, 0.3 * speed, size=(n, 2))
    return np.stack([y, x], 1), vel


def _entity_labels(sim: _Simulation, shape: tuple[int, int], min_pixels: int) -> np.ndarray:
    """Per-frame label images holding ``cell index + 1`` (``(t, y, x)`` int64)."""
    out = np.zeros((sim.n_frames, *shape), dtype=np.int64)
    for t, (idx, shapes, _) in enumerate(sim.frames):  # one vectorised paint per frame
        pairs = object_pairs(shape, shapes)
        first = paint(pairs, len(shapes))
        visible = np.bincount(first.ravel(), minlength=len(shapes) + 1)[1:] >= min_pixels
        labels = keep_largest_component(paint(pairs.select(visible[pairs.obj]), len(shapes)))
        lut = np.concatenate([[0], idx + 1])
        out[t] = lut[labels]
    return out


def _tracks(sim: _Simulation, entity_maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Track ids per frame and the CTC table, derived from where each cell is visible."""
    n_cells, n_frames = len(sim.cells), sim.n_frames
    visible = np.zeros((n_cells + 1, n_frames), dtype=bool)
    frame_idx = np.broadcast_to(np.arange(n_frames)[:, None, None], entity_maps.shape)
    visible[entity_maps.ravel(), frame_idx.ravel()] = True
    visible = visible[1:]
    # maximal runs of visible frames per cell (row-major nonzero keeps runs aligned)
    padded = np.pad(visible.astype(np.int8), ((0, 0), (1, 1)))
    step = np.diff(padded, axis=1)
    run_cell, run_start = np.nonzero(step == 1)
    _, run_stop = np.nonzero(step == -1)
    run_end = run_stop - 1
    order = np.lexsort((run_cell, run_start))  # ids in order of appearance
    run_cell, run_start, run_end = run_cell[order], run_start[order], run_end[order]
    ids = np.arange(1, run_cell.size + 1, dtype=np.int64)

    # parents: a daughter's first run starting at its birth, the mother's run ending just before
    parent = np.zeros(ids.size, dtype=np.int64)
    mother = sim.cells.mother[run_cell]
    candidates = np.flatnonzero((mother >= 0) & (run_start == sim.cells.birth[run_cell]))
    # look up the run of the mother that ends the frame before (keys: cell, last frame)
    end_key = run_cell * (n_frames + 1) + run_end
    by_key = np.argsort(end_key, kind="stable")
    wanted = mother[candidates] * (n_frames + 1) + run_start[candidates] - 1
    pos = np.minimum(np.searchsorted(end_key[by_key], wanted), max(ids.size - 1, 0))
    found = end_key[by_key][pos] == wanted if ids.size else np.zeros(0, bool)
    parent[candidates[found]] = ids[by_key[pos[found]]]
    linked = parent > 0
    n_children = np.bincount(parent[linked], minlength=ids.size + 1)
    parent[linked & (n_children[parent] != 2)] = 0  # both daughters or none
    tracks = np.stack([ids, run_start, run_end, parent], axis=1).astype(np.int64)

    track_of = np.zeros((n_cells + 1, n_frames), dtype=np.int64)
    lengths = run_end - run_start + 1
    frames = np.repeat(run_start, lengths) + (
        np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    )
    track_of[np.repeat(run_cell + 1, lengths), frames] = np.repeat(ids, lengths)
    dtype = np.uint16 if ids.size < 2**16 else np.uint32
    instances = track_of[entity_maps, frame_idx].astype(dtype)
    return instances, tracks


def _render(
    rng: np.random.Generator,
    sim: _Simulation,
    entity_maps: np.ndarray,
    cell_line: str,
    microscope: str,
    effect: float,
) -> np.ndarray:
    """Image every frame: ``(t, 1, y, x)`` uint16."""
    line = CELL_LINES[cell_line]
    mic = MICROSCOPES[microscope]
    shape = entity_maps.shape[1:]
    n_cells = len(sim.cells)
    waves, phases = object_texture(rng, n_cells, 2, frequency=(0.7, 1.8))
    tex_amp = line.texture * rng.uniform(0.7, 1.3, size=n_cells)
    illum = illumination(shape, rng, mic.vignetting)
    bg_texture = 0.3 * smooth_field(shape, rng, max_cycles=2.0)
    bleach = 0.004  # photobleaching per frame
    pixel_size = {"y": PIXEL_UM, "x": PIXEL_UM}
    out = np.empty((sim.n_frames, 1, *shape), dtype=np.uint16)
    for t, (idx, shapes, mitotic) in enumerate(sim.frames):
        shown = np.isin(idx + 1, entity_maps[t])
        pairs = object_pairs(shape, shapes)
        pairs = pairs.select(shown[pairs.obj])
        cell = idx[pairs.obj]
        edge = np.clip(1.2 / shapes.semi_axes[:, 1], 0.05, 0.5)[pairs.obj]
        profile = smoothstep((1.0 - pairs.d) / edge) * (1.0 - 0.25 * pairs.d**2)
        pairs_cell = Pairs(cell, pairs.flat, pairs.d, pairs.local, pairs.shape)
        texture = evaluate_texture(pairs_cell, waves, phases)
        amp = np.where(mitotic[pairs.obj], 0.45, tex_amp[cell])
        bright = sim.cells.brightness[cell] * np.where(mitotic[pairs.obj], 1.9, 1.0)
        value = line.brightness * effect * bright * profile * np.clip(1 + amp * texture, 0.15, None)
        signal = np.bincount(pairs.flat, weights=value, minlength=int(np.prod(shape)))
        signal = signal.reshape(shape) * np.exp(-bleach * t)
        out[t, 0] = acquire(rng, signal, mic, pixel_size, illum, bg_texture)
    return out
