"""Recipe bbbc021-moa: fake CSVs and two plate archives (real names, columns, layout)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.datasets.recipe_check import card_of, pull_served, zip_bytes

BASE = "https://data.broadinstitute.org/bbbc/BBBC021/"
HEADER = (
    "TableNumber,ImageNumber,Image_FileName_DAPI,Image_PathName_DAPI,Image_FileName_Tubulin,"
    "Image_PathName_Tubulin,Image_FileName_Actin,Image_PathName_Actin,"
    "Image_Metadata_Plate_DAPI,Image_Metadata_Well_DAPI,Replicate,Image_Metadata_Compound,"
    "Image_Metadata_Concentration\n"
)
# compound, concentration, moa (DMSO rows are controls, left out)
MOA = [
    ("taxol", 0.3, "Microtubule stabilizers"),
    ("epothilone B", 0.1, "Microtubule stabilizers"),
    ("docetaxel", 0.03, "Microtubule stabilizers"),
    ("nocodazole", 1.0, "Microtubule destabilizers"),
    ("vincristine", 0.03, "Microtubule destabilizers"),
    ("colchicine", 0.03, "Microtubule destabilizers"),
    ("DMSO", 0.0, "DMSO"),
]


def fake_bbbc021() -> tuple[dict[str, bytes], dict[str, dict]]:
    """Two plates, two fields per treatment plus an unannotated compound."""
    rng = np.random.default_rng(0)
    plates = {"Week1_22123": "Week1", "Week4_27542": "Week4"}
    zips: dict[str, dict[str, bytes]] = {p: {} for p in plates}
    lines, truth = [HEADER], {}
    n = 0
    treatments = [*MOA, ("unannotated-drug", 1.0, None)]
    for t, (compound, conc, moa) in enumerate(treatments):
        for field in (1, 2):
            plate = list(plates)[(t + field) % 2]
            week = plates[plate]
            well = f"B{t + 2:02d}"
            names = [f"{week}_150607_{well}_s{field}_w{c}{t:02d}{field}ABC.tif" for c in (1, 2, 4)]
            planes = [rng.integers(0, 4000, (10, 12), dtype=np.uint16) for _ in names]
            for name, plane in zip(names, planes, strict=True):
                buf = io.BytesIO()
                tifffile.imwrite(buf, plane)
                zips[plate][f"{plate}/{name}"] = buf.getvalue()
            n += 1
            path = f"{week}/{plate}"
            lines.append(
                f"{t + 1},{n},{names[0]},{path},{names[1]},{path},{names[2]},{path},"
                f"{plate},{well},{field},{compound},{conc}\n"
            )
            if moa not in (None, "DMSO"):
                truth[f"{plate}_{Path(names[0]).stem}"] = {
                    "moa": moa,
                    "compound": compound,
                    "image": np.stack(planes),
                }
    moa_csv = "compound,concentration,moa\n" + "".join(f"{c},{v},{m}\n" for c, v, m in MOA)
    served = {
        BASE + "BBBC021_v1_image.csv": "".join(lines).encode(),
        BASE + "BBBC021_v1_moa.csv": moa_csv.encode(),
    }
    for plate, files in zips.items():
        served[BASE + f"BBBC021_v1_images_{plate}.zip"] = zip_bytes(files)
    return served, truth


def test_recipe_builds_moa_fields_split_by_compound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = card_of("bbbc021-moa")
    assert sum(k.startswith("plate_") for k in card["sources"]) == 55
    served, truth = fake_bbbc021()
    store = pull_served("bbbc021-moa", served, tmp_path, monkeypatch)
    classes = store.class_names("label")
    assert classes == card["class_names"]["label"] and len(classes) == 12
    assert sorted(store.sample_ids()) == sorted(truth)  # DMSO and unannotated left out
    by_compound: dict[str, set[str]] = {}
    for sid, want in truth.items():
        s = store.sample(sid)
        assert classes[s.label] == want["moa"] == s.metadata["class_name"]
        assert s.channel_names == ["DAPI", "tubulin", "actin"]
        assert np.array_equal(s.image, want["image"])
        by_compound.setdefault(want["compound"], set()).add(s.split)
    assert all(len(v) == 1 for v in by_compound.values())  # no compound in two splits
    assert {next(iter(v)) for v in by_compound.values()} == {"train", "val", "test"}
