"""Derived copies of a store that leave ground truth out: public variants and model inputs.

A challenge keeps the labels of one split hidden. Two derived stores serve it, both ordinary
canonical stores (same format, same dataset id and version, their own content manifest):

* the **public variant** holds every sample's image, the labels of every other split, and the
  hidden split's images without any ground truth (no label images, targets, track tables or
  class labels; the class column reads -1 there). It is what participants download.
* the **inputs** store holds only the hidden split's images: what a sandboxed model run may read
  (:mod:`cellbench.submissions.sandbox`).

:func:`hidden_label_manifest` lists what was left out (content digests of every ground-truth
array of the hidden split, and its class labels) without revealing it; challenge commitments
hash it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from cellbench.store.format import CURRENT_FORMAT, FORMATS, StoreFormat
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store

#: Card key recording which variant a store is and what it leaves out.
VARIANT_KEY = "variant"


def _without_truth(sample: Sample, keep_metadata: Collection[str] | None) -> Sample:
    if keep_metadata is not None:  # metadata such as object counts can give the truth away
        sample.metadata = {k: v for k, v in sample.metadata.items() if k in keep_metadata}
    sample.label = None
    sample.semantic = None
    sample.instances = None
    sample.tracks = None
    sample.target = None
    sample.target_channel_names = []
    sample.seg = None
    sample.seg_annotated = None
    return sample


def _samples(
    store: DatasetStore,
    keep: set[str] | None,
    strip: set[str],
    keep_metadata: Collection[str] | None,
) -> Iterator[Sample]:
    for sid in store.sample_ids():
        if keep is not None and sid not in keep:
            continue
        sample = store.sample(sid)
        yield _without_truth(sample, keep_metadata) if sid in strip else sample


def _format(store: DatasetStore) -> StoreFormat:
    """The format a derived store is written in: sharded (4) if the source is, else current."""
    return FORMATS["4"] if store.format.sharded else CURRENT_FORMAT


def truth_paths(store: DatasetStore, sample_id: str) -> list[str]:
    """Manifest paths of every ground-truth array of one sample (labels, target, tracks, SEG)."""
    fmt = store.format
    arrays = store.manifest["arrays"]
    candidates = [f"{fmt.label_path(sample_id, name)}/0" for name in ("instances", "semantic")]
    candidates += [f"{fmt.target_path(sample_id)}/0", fmt.tracks_path(sample_id)]
    if fmt.sparse_seg:  # sparse SEG truth of tracking sequences (format 3)
        candidates += [f"{fmt.label_path(sample_id, 'seg')}/0", fmt.seg_frames_path(sample_id)]
    return [p for p in candidates if p in arrays]


def hidden_label_manifest(store: DatasetStore, split: str) -> dict[str, Any]:
    """What the hidden split's ground truth is, as digests: the input of a label commitment.

    Args:
        store: The complete store (with labels).
        split: The hidden split.

    Returns:
        ``{"dataset": id@version, "split": ..., "arrays": {path: {sha256, shape, dtype}},
        "labels": {sample: class index}}`` (``labels`` only for datasets with class labels).
        Sorted, JSON-serialisable; never published itself (a digest of a few class labels can
        be brute-forced), only hashed with a secret salt.
    """
    arrays = store.manifest["arrays"]
    out: dict[str, Any] = {"dataset": f"{store.id}@{store.version}", "split": split, "arrays": {}}
    labels: dict[str, int] = {}
    for sid in store.sample_ids(split):
        for path in truth_paths(store, sid):
            entry = arrays[path]
            out["arrays"][path] = {
                "sha256": entry["sha256"],
                "shape": list(entry["shape"]),
                "dtype": entry["dtype"],
            }
        label = store.label(sid)
        if label is not None:
            labels[sid] = int(label)
    if labels:
        out["labels"] = dict(sorted(labels.items()))
    out["arrays"] = dict(sorted(out["arrays"].items()))
    return out


def write_public_variant(
    store: DatasetStore,
    hidden_split: str,
    dest: str | Path,
    note: Mapping[str, Any] | None = None,
    keep_metadata: Collection[str] = (),
) -> DatasetStore:
    """Write the public variant of a store: the hidden split's images without ground truth.

    Args:
        store: The complete store.
        hidden_split: Split whose ground truth is left out.
        dest: New store directory (must not exist; written atomically).
        note: Extra fields for the card's ``variant`` record (e.g. a label commitment).
        keep_metadata: Metadata columns the hidden samples keep (the others, which may be
            derived from the labels, such as object counts, are left out).

    Returns:
        The opened public store.
    """
    hidden = set(store.sample_ids(hidden_split))
    card = dict(store.card)
    card[VARIANT_KEY] = {
        "kind": "public",
        "hidden_split": hidden_split,
        "hidden_metadata_kept": sorted(keep_metadata),
        **dict(note or {}),
    }
    samples = _samples(store, None, hidden, set(keep_metadata))
    return build_store(samples, dest, card, store.meta.get("classes") or None, fmt=_format(store))


def write_inputs(
    store: DatasetStore,
    split: str,
    dest: str | Path,
    keep_metadata: Collection[str] | None = None,
) -> DatasetStore:
    """Write a store holding only one split's images (no ground truth, no other split).

    Args:
        store: The source store.
        split: The split whose images a model run may read.
        dest: New store directory (must not exist; written atomically).
        keep_metadata: Metadata columns kept (default: all).

    Returns:
        The opened inputs store (same dataset id, version and classes).
    """
    ids = set(store.sample_ids(split))
    card = dict(store.card)
    card[VARIANT_KEY] = {"kind": "inputs", "split": split}
    samples = _samples(store, ids, ids, keep_metadata)
    return build_store(samples, dest, card, store.meta.get("classes") or None, fmt=_format(store))


def variant_of(store: DatasetStore) -> dict[str, Any]:
    """The ``variant`` record of a derived store (empty for a complete store)."""
    value = store.card.get(VARIANT_KEY)
    return dict(value) if isinstance(value, Mapping) else {}
