"""Fake Allen label-free files in the real layout: 7-channel uint16 CZI z-stacks + pytorch_fnet CSV.

Names, header and channel columns follow pytorch_fnet ``release_1`` ``data/csvs/fibrillarin.csv``
(``path_czi`` = ``data/fibrillarin/<name>.czi``; bright field in channel 6, membrane 1,
fibrillarin 3, DNA 5; ``channel_signal`` 6, ``channel_target`` 3). The CZI files are written with
pylibCZIrw, the reader's own writer: one Gray16 subblock per (channel, z) plane, with x/y/z
scaling in the metadata. Pixel values encode the channel, so a test can tell which one was read.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np

HEADER = (
    "path_czi,structureProteinName,colony_position,channel_bf,channel_membrane,"
    "channel_struct,channel_dna,z_max_dna,channel_signal,channel_target"
)
#: (file stem, colony_position) of real fibrillarin rows: 5 plates, both name patterns' wells.
ROWS = (
    ("3500001483_100X_20171031_1-Scene-07-P8-E07", ""),
    ("3500001483_100X_20171031_2-Scene-04-P19-F05", ""),
    ("3500001541_100X_20171114_2-Scene-21-P40-F07", ""),
    ("3500001549_100X_20171117_1-Scene-16-P48-E05", "e"),
    ("3500001543_10X_20171114_2-Scene-09-P39-F05", "r"),
    ("3500001494_100X_20171103_2-Scene-16-P36-E08", ""),
)
N_CHANNELS, N_Z, Y, X = 7, 3, 12, 10
SCALE_UM = (0.108333, 0.108333, 0.29)  # x, y, z


def volume(index: int, channel: int, shape: tuple[int, int, int] = (N_Z, Y, X)) -> np.ndarray:
    """The uint16 z-stack written for file ``index``, channel ``channel``."""
    rng = np.random.default_rng(1000 * index + channel)
    return (rng.integers(0, 500, shape) + 1000 * channel).astype(np.uint16)


def write_czi(
    path: Path,
    index: int,
    n_channels: int = N_CHANNELS,
    n_z: int = N_Z,
    short_channel: int | None = None,
    empty_channel: int | None = None,
    small_channel: int | None = None,
    wide_channel: int | None = None,
) -> None:
    """Write one fake CZI; the other arguments break it for validator tests.

    ``short_channel`` gets one z plane fewer, ``empty_channel`` no pixels at all (the channel
    index exists, its subblocks do not) and ``small_channel`` planes two pixels narrower;
    ``wide_channel`` (a channel nobody reads) four pixels wider, which widens the file's box.
    """
    from pylibCZIrw import czi

    with czi.create_czi(str(path), exist_ok=True) as writer:
        for c in range(n_channels):
            if c == empty_channel:
                continue
            stack = volume(index, c, (n_z, Y, X))
            if c == small_channel:
                stack = stack[..., : X - 2]
            if c == wide_channel:
                stack = volume(index, c, (n_z, Y, X + 4))
            for z in range(n_z - (c == short_channel)):
                writer.write(data=stack[z], plane={"C": c, "Z": z, "T": 0})
        writer.write_metadata(
            document_name=path.stem,
            channel_names={c: f"Ch{c}" for c in range(n_channels)},
            scale_x=SCALE_UM[0] * 1e-6,
            scale_y=SCALE_UM[1] * 1e-6,
            scale_z=SCALE_UM[2] * 1e-6,
        )


def csv_text(rows: tuple[tuple[str, str], ...] = ROWS, structure: str = "fibrillarin") -> str:
    """The pytorch_fnet dataset CSV for ``rows``."""
    lines = [HEADER] + [
        f"data/{structure}/{stem}.czi,{structure},{pos},6,1,3,5,2.0,6,3" for stem, pos in rows
    ]
    return "\n".join(lines) + "\n"


def fake_archive(structure: str = "fibrillarin") -> tuple[bytes, bytes]:
    """``(<structure>.tar.gz bytes, CSV bytes)``; members are ``<structure>/<name>.czi``."""
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, (stem, _) in enumerate(ROWS):
            path = Path(tmp) / f"{stem}.czi"
            write_czi(path, i)
            tar.add(path, arcname=f"{structure}/{stem}.czi")
    return buf.getvalue(), csv_text(structure=structure).encode()
