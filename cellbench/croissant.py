"""Croissant 1.1 (MLCommons) JSON-LD descriptions of datasets.

:func:`croissant` describes a dataset version as ML tools index it: name, description, version,
SPDX license URL, BibTeX ``citeAs`` and creators from the card (:mod:`cellbench.citation`), and
the Hugging Face Parquet export (:mod:`cellbench.store.hf`) as its distribution: one ``FileSet``
per split (``<split>/*.parquet`` beside the JSON-LD file, as ``cellbench datasets export --to hf``
writes it, ``croissant.json`` included) and a ``samples`` record set whose fields are the
export's columns (arrays with ``isArray`` and ``arrayShape``, the ``preview`` thumbnail as an
``ImageObject``), plus one inline record set per class table. ``cellbench datasets croissant ID``
prints it; ``mlcroissant`` validates it in the tests.

Only the store's metadata is read (fields, shapes from the manifest, class tables, splits), so
this runs on the core install, without ``datasets`` or ``mlcroissant``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from cellbench.catalog import DatasetCard
from cellbench.citation import bibtex, citation_fields
from cellbench.licenses import SPDX_IDS

#: ``conformsTo`` of what :func:`croissant` writes.
CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
#: File name of the description inside an export.
CROISSANT_FILE = "croissant.json"
#: cellbench split -> split folder of the Hugging Face export.
_HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}
#: Array fields of a sample and what they hold.
_ARRAYS = {
    "image": "input image; axes in the `axes` field",
    "instances": "instance id per pixel (0 = background)",
    "semantic": "class index per pixel (see the semantic class table)",
    "target": "target fluorescence, axes c[,z],y,x",
    "tracks": "Cell Tracking Challenge track table: track_id, start, end, parent",
}

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}


def _data_type(dtype: str) -> str:
    kind = np.dtype(dtype).kind
    return {"b": "sc:Boolean", "i": "sc:Integer", "u": "sc:Integer", "f": "sc:Float"}.get(
        kind, "sc:Text"
    )


def _field(
    record: str, name: str, data_type: str, description: str, **extra: Any
) -> dict[str, Any]:
    return {
        "@type": "cr:Field",
        "@id": f"{record}/{name}",
        "name": name,
        "description": description,
        "dataType": data_type,
        "source": {"fileSet": {"@id": "parquet-files"}, "extract": {"column": name}},
        **extra,
    }


def _array_shapes(store: Any, name: str) -> tuple[str, int] | None:
    """(dtype, ndim) of one array field, from the manifest (no pixel read)."""
    fmt = store.format
    for sid in store.sample_ids():
        path = {
            "image": f"{fmt.image_path(sid)}/0",
            "instances": f"{fmt.label_path(sid, 'instances')}/0",
            "semantic": f"{fmt.label_path(sid, 'semantic')}/0",
            "target": f"{fmt.target_path(sid)}/0",
            "tracks": fmt.tracks_path(sid),
        }[name]
        entry = store.manifest["arrays"].get(path)
        if entry is not None:
            return str(entry["dtype"]), len(entry["shape"])
    return None


def _license_url(license_: str) -> str:
    text = license_.strip()
    if text in SPDX_IDS:
        return f"https://spdx.org/licenses/{text}.html"
    return text


def store_card(store: Any) -> DatasetCard:
    """The card a store carries, as a :class:`DatasetCard` (imported stores' cards unvalidated)."""
    snapshot = dict(store.card)
    names = {f for f in DatasetCard.__dataclass_fields__ if f not in ("extra", "path")}
    fields = {k: snapshot.pop(k) for k in list(snapshot) if k in names}
    fields.setdefault("id", store.id)
    fields.setdefault("version", store.version)
    for key in ("title", "description", "license", "citation"):
        fields[key] = str(fields.get(key) or "")
    fields["title"] = fields["title"] or store.id
    fields["tasks"] = tuple(fields.get("tasks") or store.tasks)
    fields["groups"] = tuple(fields.get("groups") or ())
    for key in ("annotation", "splits", "sources", "class_names", "size", "checksums"):
        fields[key] = dict(fields.get(key) or {})
    return DatasetCard(**fields, extra=snapshot)


def croissant(card: DatasetCard | None, store: Any) -> dict[str, Any]:
    """The Croissant 1.1 JSON-LD of a dataset version.

    Args:
        card: The dataset card (None: the card the store carries).
        store: The dataset's :class:`~cellbench.store.zarr_store.DatasetStore` (its manifest,
            splits and class tables describe the record sets).

    Returns:
        The JSON-LD document, ready for ``json.dumps``.
    """
    card = card or store_card(store)
    cite = citation_fields(card)
    record = "samples"
    fields = [
        _field(record, "id", "sc:Text", "sample id"),
        _field(record, "split", "sc:Text", "split: train, validation or test"),
        _field(
            record,
            "preview",
            "sc:ImageObject",
            "8-bit PNG thumbnail of the image (first time point, maximum over z)",
            source={
                "fileSet": {"@id": "parquet-files"},
                "extract": {"column": "preview"},
                "transform": {"jsonPath": "bytes"},
            },
        ),
    ]
    if "label" in store.fields:
        fields.append(_field(record, "label", "sc:Integer", "class index (-1 = none)"))
    for name, meaning in _ARRAYS.items():
        found = _array_shapes(store, name) if name in store.fields else None
        if found is None:
            continue
        dtype, ndim = found
        shape = ",".join(["-1"] * ndim)
        fields.append(
            _field(
                record,
                name,
                _data_type(dtype),
                f"{meaning} ({dtype}, {ndim} dimensions)",
                isArray=True,
                arrayShape=shape,
            )
        )
    fields += [
        _field(record, "axes", "sc:Text", "axis order of `image` (OME-Zarr order)"),
        _field(record, "table_row", "sc:Integer", "row in the canonical store's table"),
    ]
    record_sets: list[dict[str, Any]] = [
        {
            "@type": "cr:RecordSet",
            "@id": record,
            "name": record,
            "description": "One record per sample, read from the Parquet shards of every split.",
            "key": {"@id": f"{record}/id"},
            "field": fields,
        }
    ]
    for table in ("label", "semantic"):
        names = store.class_names(table)
        if not names:
            continue
        rs = f"{table}_classes"
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": rs,
                "name": rs,
                "description": f"The {table} class table: index -> name.",
                "dataType": "sc:Enumeration",
                "key": {"@id": f"{rs}/index"},
                "field": [
                    {
                        "@type": "cr:Field",
                        "@id": f"{rs}/index",
                        "name": "index",
                        "dataType": "sc:Integer",
                    },
                    {
                        "@type": "cr:Field",
                        "@id": f"{rs}/name",
                        "name": "name",
                        "dataType": "sc:Text",
                    },
                ],
                "data": [{f"{rs}/index": i, f"{rs}/name": n} for i, n in enumerate(names)],
            }
        )
    creators = [
        {"@type": "sc:Person" if "," in a else "sc:Organization", "name": a}
        for a in cite["authors"]
    ]
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CROISSANT_VERSION,
        "name": card.id,
        "alternateName": card.title,
        "description": card.description,
        "version": _semver(card.version),
        "license": _license_url(card.license),
        "url": card.homepage or "https://github.com/cellbench/cellbench",
        "citeAs": bibtex(card).strip(),
        "creator": creators or [{"@type": "sc:Organization", "name": "cellbench developers"}],
        "keywords": ["cellbench", "microscopy", "biology", *card.tasks],
        "distribution": [
            {
                "@type": "cr:FileSet",
                "@id": "parquet-files",
                "name": "parquet-files",
                "description": "Hugging Face Parquet shards, one folder per split "
                "(cellbench datasets export ID --to hf DEST).",
                "encodingFormat": "application/x-parquet",
                "includes": [f"{_HUB_SPLITS.get(s, s)}/*.parquet" for s in store.splits],
            }
        ],
        "recordSet": record_sets,
    }
    if cite.get("doi"):
        doc["sameAs"] = f"https://doi.org/{cite['doi']}"
    extra: Mapping[str, Any] = card.extra
    if isinstance(extra.get("license_notes"), str):
        doc["usageInfo"] = str(extra["license_notes"]).strip()
    return doc


def _semver(version: str) -> str:
    """Croissant asks for MAJOR.MINOR.PATCH: ``1.0`` becomes ``1.0.0``."""
    parts = version.split(".")
    if all(p.isdigit() for p in parts) and len(parts) < 3:
        parts += ["0"] * (3 - len(parts))
    return ".".join(parts)
