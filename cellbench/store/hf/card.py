"""The ``README.md`` dataset card of an export, rendered from its metadata JSON.

:func:`dataset_card` writes the YAML front matter the Hub reads (license, tags, task categories,
size, and for local exports the ``configs`` and ``dataset_info``), then Markdown: a summary
table, the splits, every column with its feature and meaning, the class tables, usage and
citation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from datasets import (
    Features,
)

from cellbench.licenses import hub_license
from cellbench.store.hf.layout import (
    ARRAY_FIELDS,
    DESCRIPTION_MARKER,
)
from cellbench.store.hf.task_columns import columns_of

#: Hub license values that are not SPDX ids (foreign datasets may use them).
_HUB_ONLY_LICENSES = frozenset({"other", "unknown"})
_COLUMN_MEANINGS = {
    "id": "sample id",
    "split": "split (train, validation, test)",
    "preview": "8-bit PNG thumbnail of `image` for viewing (first time point, max over z)",
    "semantic_classes": "semantic classes present in the sample (names in the feature)",
    "label": "class index (-1 = none)",
    "image": "input image, axes in `axes`",
    "instances": "instance id per pixel (0 = background), axes of the image without c",
    "semantic": "class index per pixel, axes of the image without c",
    "target": "target fluorescence, axes c[,z],y,x",
    "target_channel_names": "names of the target channels",
    "tracks": "CTC track table: track_id, start, end, parent",
    "axes": "axis order of `image` (OME-Zarr order)",
    "channel_names": "one name per image channel",
    "pixel_size": "physical size per axis (um for z/y/x, s for t); null = unknown",
    "metadata": "per-sample metadata (evaluation groups); '' or NaN = missing",
    "table_row": "row in the canonical store's sample table",
}


def _size_category(n: int) -> str:
    for limit, name in ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 10**6 else "1M<n<10M"


def _task_categories(tasks: Sequence[str]) -> list[str]:
    """Hub task categories of a card's tasks, from each task's Hugging Face column mapping."""
    found = set()
    for task in tasks:
        columns = columns_of(task)
        if columns is not None and columns.task_category:
            found.add(columns.task_category)
    return sorted(found)


def dataset_card(
    metadata: Mapping[str, Any],
    *,
    data_files: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> str:
    """Render the ``README.md`` dataset card of an export from its metadata JSON.

    Args:
        metadata: The metadata JSON (:attr:`ExportPlan.metadata`).
        data_files: Split -> file pattern, written as the card's ``configs`` (local Parquet
            exports); omitted for ``push_to_hub``, which writes its own.
        repo_id: Hub repository id, used in the usage snippet.

    Returns:
        The card text: YAML front matter and Markdown.
    """
    card = dict(metadata.get("dataset", {}))
    store = dict(metadata.get("store", {}))
    ident, version = str(card.get("id", "")), str(card.get("version", ""))
    title = str(card.get("title") or ident)
    tasks = [str(t) for t in card.get("tasks", [])]
    license_ = str(card.get("license", "") or "unknown")
    notes = str(card.get("license_notes", "") or "").strip()
    slug = license_.strip().lower().replace(" ", "-")  # SPDX ids are the Hub's, lower-cased
    header: dict[str, Any] = {"pretty_name": title}
    hub = hub_license(license_) or (slug if slug in _HUB_ONLY_LICENSES else None)
    if hub is not None:
        header["license"] = hub
    else:
        header["license"] = "other"
        header["license_name"] = re.sub(r"[^a-z0-9.-]+", "-", slug).strip("-") or "other"
        if card.get("homepage"):
            header["license_link"] = str(card["homepage"])
    header["tags"] = ["cellbench", "microscopy", "biology", *tasks]
    categories = _task_categories(tasks)
    if categories:
        header["task_categories"] = categories
    header["size_categories"] = [_size_category(int(store.get("n_samples", 0)))]
    if data_files:
        # load_dataset(<folder>) copies these into every split's DatasetInfo, so a DatasetDict
        # loaded from the folder still carries the metadata JSON (push_to_hub writes its own).
        header["dataset_info"] = {
            "config_name": "default",
            "description": f"{DESCRIPTION_MARKER}\n{json.dumps(metadata, sort_keys=True)}",
            "citation": str(card.get("citation", "")),
            "homepage": str(card.get("homepage", "")),
            "license": license_,
        }
        header["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": p} for s, p in data_files.items()],
            }
        ]
    names = dict(metadata.get("split_names") or {})
    counts = {names.get(k, k): v for k, v in dict(store.get("split_counts", {})).items()}
    annotation = dict(card.get("annotation") or {})
    features = Features.from_dict(metadata["features"]) if metadata.get("features") else {}
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=math.inf).rstrip(),
        "---",
        "",
        f"# {title}",
        "",
        str(card.get("description", "")).strip(),
        "",
        "| | |",
        "|---|---|",
        f"| cellbench dataset | `{ident}@{version}` |",
        f"| tasks | {', '.join(tasks) or '-'} |",
        f"| samples | {store.get('n_samples', '?')} "
        f"({', '.join(f'{k}: {v}' for k, v in counts.items())}) |",
        f"| license | {license_}{f' ({notes})' if notes else ''} |",
    ]
    if annotation:
        details = f" - {annotation['details']}" if annotation.get("details") else ""
        lines.append(f"| annotation | {annotation.get('provenance', '?')}{details} |")
    if card.get("homepage"):
        lines.append(f"| homepage | {card['homepage']} |")
    lines += [
        f"| store digest | `{metadata.get('source_digest', '')}` |",
        f"| store format | {metadata.get('store_format_version', '?')} "
        f"(Hugging Face layout {metadata.get('cellbench_hf', '?')}) |",
        "",
        "## Splits",
        "",
        str(dict(card.get("splits") or {}).get("method", "")),
        "",
        "| split | samples |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in counts.items()),
        "",
        "## Columns",
        "",
        "Arrays keep their dtype and shape (16-bit and multichannel images are not converted).",
        "",
        "| column | feature | meaning |",
        "|---|---|---|",
    ]
    for name, feature in features.items():
        base = re.sub(r"_(shape|dtype)$", "", name)
        if name.endswith("_shape") and base in ARRAY_FIELDS:
            meaning = f"shape of `{base}` (its values are stored flat, C order)"
        elif name.endswith("_dtype") and base in ARRAY_FIELDS:
            meaning = f"NumPy dtype of `{base}` (stored as little-endian bytes)"
        else:
            meaning = _COLUMN_MEANINGS.get(name, "")
        text = str(feature).replace("|", "\\|")
        if len(text) > 120:
            text = text[:117] + "..."
        lines.append(f"| `{name}` | `{text}` | {meaning} |")
    classes = dict(metadata.get("classes") or {})
    if classes:
        lines += ["", "## Classes", ""]
        for table_name, names in classes.items():
            listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
            lines.append(f"- `{table_name}`: {listed}")
    where = repo_id or "path/to/this/folder"
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{where}")',
        "# keep uint16 / float16 pixels: datasets' numpy and torch formats cast to int64/float32",
        'ds = ds.with_format("numpy", dtype=None)',
        "```",
        "",
        "Rebuild the canonical cellbench store (bit-exact, checked against the store digest):",
        "",
        "```bash",
        *(
            [f"hf download {repo_id} --repo-type dataset --local-dir {ident or 'data'}"]
            if repo_id
            else []
        ),
        f"cellbench datasets import {(ident or 'data') if repo_id else where}",
        "```",
    ]
    if card.get("citation"):
        lines += ["", "## Citation", "", "```", str(card["citation"]).strip(), "```"]
    return "\n".join(lines) + "\n"
