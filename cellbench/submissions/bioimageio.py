"""BioImage.IO model packages as submissions (manifest ``kind: bioimageio``).

A BioImage.IO 0.5 model package (a folder or ``.zip`` with ``rdf.yaml``) is run as the
TorchScript model its ``weights.torchscript`` entry names, under cellbench's I/O convention
(:mod:`cellbench.submissions.runners`), with the input normalisation its ``preprocessing`` declares
instead of a manifest ``normalisation``:

=================================================  ============================================
rdf.yaml input preprocessing                       cellbench normalisation
=================================================  ============================================
``scale_range`` (``min_percentile``,               ``percentile`` (``low``, ``high``), per
``max_percentile``; per channel)                   channel as cellbench always does
``zero_mean_unit_variance``                        ``zscore``
``fixed_zero_mean_unit_variance`` (``mean``,       ``affine``: offset ``mean``, scale
``std``, ``eps``)                                  ``std + eps``
``scale_linear`` (``gain`` > 0, ``offset``)        ``affine``: offset ``-offset / gain``, scale
                                                   ``1 / gain``
none (``ensure_dtype`` alone)                      ``none``
=================================================  ============================================

The description is read with PyYAML (no ``bioimageio.spec`` needed to submit); the weights file
must exist inside the package and match its ``sha256`` when one is given, and then goes through
the same static TorchScript checks as any submitted model. Anything else (several inputs, other
preprocessing, no TorchScript weights, a zip member escaping the folder) is listed as a problem.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellbench.errors import ValidationError
from cellbench.submissions.safety import DEFAULT_LIMITS, Limits

#: File name of the description inside a package.
RDF_FILE = "rdf.yaml"


@dataclass
class BioImageIOPackage:
    """What cellbench runs from a BioImage.IO package.

    Attributes:
        rdf: The parsed ``rdf.yaml``.
        weights: The TorchScript weights file (None when missing).
        normalisation: cellbench's normalisation equivalent to the input preprocessing.
        problems: Everything that keeps the package from being run, one line each.
    """

    rdf: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None
    normalisation: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The model's name in its description."""
        return str(self.rdf.get("name", ""))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _package_root(folder: Path) -> Path:
    """Where an unpacked zip's files are: its single top-level folder, or ``folder`` itself."""
    entries = list(folder.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder


def unpack(
    path: Path, into: Path, limits: Limits = DEFAULT_LIMITS
) -> tuple[Path | None, list[str]]:
    """The package folder: ``path`` itself, or a zip extracted into ``into`` once.

    The zip is checked before anything is extracted, as the challenge server checks uploads
    (:func:`cellbench.server.storage.unpack`: member names, symbolic links, count, total size
    and compression ratios within ``limits``), extracted into a scratch folder beside
    ``into`` and renamed into place only when complete: a refused, damaged (bad CRC) or
    interrupted extraction leaves nothing that a later call would take for the package.
    ``into`` is named by the zip's digest, so an existing one is this zip's, complete.
    """
    if path.is_dir():
        return path, []
    if into.is_dir():  # unpacked before (only ever renamed into place complete)
        return _package_root(into), []
    if not zipfile.is_zipfile(path):
        return None, [f"submission: {path} is neither a BioImage.IO package folder nor a zip"]
    from cellbench.server.storage import ArchiveLimits
    from cellbench.server.storage import unpack as unpack_archive
    from cellbench.store.scratch import make_scratch

    caps = ArchiveLimits(limits.max_members, limits.max_total_bytes, limits.max_ratio)
    scratch = make_scratch(into.parent, ".unpack-")
    try:
        try:
            unpack_archive(path, scratch / "package", caps)
        except ValidationError as err:  # every problem of the archive, nothing extracted
            return None, [f"submission: {path.name}: {p}" for p in err.problems]
        except (zipfile.BadZipFile, OSError, EOFError) as err:  # bad CRC, truncated member
            return None, [f"submission: {path.name}: cannot be extracted ({err})"]
        try:
            (scratch / "package").rename(into)
        except OSError:
            if not into.is_dir():  # (else another process unpacked the same zip first)
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _package_root(into), []


def _normalisation(preprocessing: list[Any], where: str) -> tuple[dict[str, Any], list[str]]:
    ops = [p for p in preprocessing if isinstance(p, dict) and p.get("id") != "ensure_dtype"]
    if not ops:
        return {"method": "none"}, []
    if len(ops) > 1:
        names = ", ".join(str(p.get("id")) for p in ops)
        return {}, [f"{where}: preprocessing {names}: cellbench runs one normalisation step"]
    op = ops[0]
    kwargs = dict(op.get("kwargs") or {})
    if op.get("id") == "scale_range":
        low = float(kwargs.get("min_percentile", 0.0))
        high = float(kwargs.get("max_percentile", 100.0))
        return {"method": "percentile", "low": low, "high": high}, []
    if op.get("id") == "zero_mean_unit_variance":
        return {"method": "zscore"}, []
    if op.get("id") in ("fixed_zero_mean_unit_variance", "scale_linear"):
        return _affine(str(op["id"]), kwargs, where)
    return {}, [
        f"{where}: preprocessing {op.get('id')!r} is not one cellbench can run "
        "(scale_range, zero_mean_unit_variance, fixed_zero_mean_unit_variance, "
        "scale_linear or none)"
    ]


def _numbers(value: Any) -> list[float] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        return None
    return [float(v) for v in values]


def _affine(op: str, kwargs: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """Fixed per-channel statistics as cellbench's ``affine`` normalisation (module table)."""
    if op == "fixed_zero_mean_unit_variance":
        mean, std = _numbers(kwargs.get("mean")), _numbers(kwargs.get("std"))
        eps = _numbers(kwargs.get("eps", 1e-6))
        if mean is None or std is None or eps is None or len(mean) != len(std):
            return {}, [f"{where}: {op} needs numbers mean and std of equal length"]
        offset, scale = mean, [s + eps[0] for s in std]
    else:
        gain, off = _numbers(kwargs.get("gain", 1.0)), _numbers(kwargs.get("offset", 0.0))
        if gain is not None and off is not None:  # a scalar applies to every channel
            n = max(len(gain), len(off))
            gain = gain * n if len(gain) == 1 else gain
            off = off * n if len(off) == 1 else off
        if gain is None or off is None or len(gain) != len(off):
            return {}, [f"{where}: {op} needs numbers gain and offset of equal length"]
        if any(g <= 0 for g in gain):
            return {}, [f"{where}: {op} gain must be positive for cellbench to run it"]
        offset, scale = [-o / g for o, g in zip(off, gain, strict=True)], [1 / g for g in gain]
    if any(s <= 0 for s in scale):
        return {}, [f"{where}: {op} gives a non-positive scale"]
    return {"method": "affine", "offset": offset, "scale": scale}, []


def read_package(folder: Path) -> BioImageIOPackage:
    """Read a BioImage.IO 0.5 model package folder into what cellbench runs."""
    out = BioImageIOPackage()
    rdf_path = folder / RDF_FILE
    where = f"submission {rdf_path}"
    if not rdf_path.is_file():
        out.problems.append(f"submission: {folder} has no {RDF_FILE} (not a BioImage.IO package)")
        return out
    try:
        rdf = yaml.safe_load(rdf_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        out.problems.append(f"{where}: unreadable ({err})")
        return out
    if not isinstance(rdf, dict):
        out.problems.append(f"{where}: not a YAML mapping")
        return out
    out.rdf = rdf
    if rdf.get("type") != "model":
        out.problems.append(f"{where}: type {rdf.get('type')!r}, expected 'model'")
    if not str(rdf.get("format_version", "")).startswith("0.5."):
        out.problems.append(
            f"{where}: format_version {rdf.get('format_version')!r}; cellbench reads 0.5.x"
        )
    inputs = rdf.get("inputs") or []
    if len(inputs) != 1:
        out.problems.append(f"{where}: {len(inputs)} input tensors; cellbench feeds one image")
    else:
        axes = [str(a.get("type")) for a in inputs[0].get("axes") or []]
        if axes[:2] != ["batch", "channel"] or any(a != "space" for a in axes[2:]):
            out.problems.append(
                f"{where}: input axes {axes}; expected batch, channel, then space axes"
            )
        norm, problems = _normalisation(list(inputs[0].get("preprocessing") or []), where)
        out.normalisation, out.problems = norm, out.problems + problems
    torchscript = dict((rdf.get("weights") or {}).get("torchscript") or {})
    if not torchscript.get("source"):
        out.problems.append(f"{where}: no torchscript weights (cellbench runs TorchScript)")
        return out
    weights = (folder / str(torchscript["source"])).resolve()
    if folder.resolve() not in weights.parents or not weights.is_file():
        out.problems.append(f"{where}: torchscript weights {torchscript['source']!r} not found")
        return out
    expected = torchscript.get("sha256")
    if expected and _sha256(weights) != str(expected):
        out.problems.append(f"{where}: torchscript weights do not match their sha256")
        return out
    out.weights = weights
    return out
