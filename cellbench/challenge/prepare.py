"""Everything a server derives from a challenge declaration before it accepts submissions.

:func:`prepare_challenge` opens the complete store (with the hidden labels), checks that it
serves the task and split, cuts the hidden split into its public and private parts
(group-aware, seeded: :func:`cellbench.splits.split_ids`), reads the metric parameters the task
scores with (and refuses to run if the declaration pinned others), computes the label
commitment, and builds, once per store digest, the public variant (for download) and the
inputs store (what a sandboxed model reads). Derived files live in
``<root>/<challenge id>/``; the commitment's secret salt in ``secret.json`` (mode 0600).

The label commitment is ``sha256(canonical JSON of {hidden_labels, metric_parameters,
scorer_version, salt})`` where ``hidden_labels`` is
:func:`cellbench.store.variants.hidden_label_manifest` (content digests of every ground-truth
array of the hidden split, and its class labels). It is published from the start; the salt is
published after the final deadline, so that anyone given the labels can recompute it then,
while before it the commitment reveals nothing (a digest of a few class labels without a salt
could be found by trying every labelling).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench._version import __version__
from cellbench.challenge.config import ChallengeConfig
from cellbench.errors import ValidationError
from cellbench.store.zarr_store import DatasetStore


@dataclass
class PreparedChallenge:
    """A challenge ready to score.

    Attributes:
        config: The declaration.
        store: The complete store (hidden labels included; never leaves the server).
        hidden_ids: Samples of the hidden split, in table order.
        public_ids: Hidden samples scored on the public leaderboard.
        private_ids: Hidden samples scored on the private leaderboard.
        metric_parameters: ``{metric: parameters}`` the task scores with.
        commitment: The label commitment (hex sha256).
        salt: The commitment's secret salt (published after the final deadline).
        public_store: The public variant.
        public_archive: A tar of the public variant (what the download endpoint serves).
        public_archive_sha256: Its digest.
        inputs_store: The hidden split's images only (sandbox input).
        folder: Where the derived files live.
    """

    config: ChallengeConfig
    store: DatasetStore
    hidden_ids: list[str]
    public_ids: list[str]
    private_ids: list[str]
    metric_parameters: dict[str, Any]
    commitment: str
    salt: str
    public_store: Path
    public_archive: Path
    public_archive_sha256: str
    inputs_store: Path
    folder: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Challenge id."""
        return self.config.id

    def public_info(self, revealed: bool = False) -> dict[str, Any]:
        """What may be published about the challenge (the salt only once ``revealed``)."""
        c = self.config
        return {
            "id": c.id,
            "title": c.title,
            "description": c.description,
            "rules": c.rules,
            "dataset": c.dataset,
            "dataset_digest": self.store.checksum,
            "task": c.task,
            "hidden_split": c.hidden_split,
            "accepts": list(c.accepts),
            "limits": {
                "submissions_per_day": c.limits.submissions_per_day,
                "max_upload_bytes": c.limits.max_upload_bytes,
                "max_model_runtime_s": c.limits.max_model_runtime_s,
                "max_model_memory_bytes": c.limits.max_model_memory_bytes,
            },
            "partition": {
                "public_fraction": c.partition.public_fraction,
                "group_by": c.partition.group_by,
                "seed": c.partition.seed,
                "public": list(self.public_ids),
                "private": list(self.private_ids),
            },
            "phases": c.to_dict()["phases"],
            "scorer_version": __version__,
            "metric_parameters": self.metric_parameters,
            "scoring": {"n_bootstrap": c.n_bootstrap, "bootstrap_seed": c.bootstrap_seed},
            "label_commitment": self.commitment,
            "commitment_salt": self.salt if revealed else None,
            "public_store_sha256": self.public_archive_sha256,
        }


def canonical_json(data: Any) -> bytes:
    """Sorted, compact, UTF-8 JSON (what digests and signatures cover)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def label_commitment(
    hidden_labels: dict[str, Any], metric_parameters: dict[str, Any], salt: str
) -> str:
    """sha256 over the hidden labels' manifest, scorer version, metric parameters and salt."""
    body = {
        "hidden_labels": hidden_labels,
        "metric_parameters": metric_parameters,
        "scorer_version": __version__,
        "salt": salt,
    }
    return hashlib.sha256(canonical_json(body)).hexdigest()


def metric_parameters(task: str, store: DatasetStore, split: str) -> dict[str, Any]:
    """``{metric name: parameters}`` of the metrics the task scores ``split`` with."""
    from cellbench.tasks import get_task

    metrics = get_task(task).metrics(store, split)
    return json.loads(json.dumps({m.name: m.params for m in metrics}, default=str))


def partition(config: ChallengeConfig, store: DatasetStore) -> tuple[list[str], list[str]]:
    """Public and private sample ids of the hidden split (group-aware, seeded).

    Raises:
        ValidationError: If the group column is unknown or there are too few groups.
    """
    from cellbench.splits import split_ids

    ids = store.sample_ids(config.hidden_split)
    part = config.partition
    groups = None
    where = f"challenge {config.id}: partition"
    if part.group_by is not None:
        if part.group_by not in store.metadata_columns:
            raise ValidationError(
                [
                    f"group_by {part.group_by!r} is not a metadata column of {config.dataset} "
                    f"({', '.join(store.metadata_columns) or 'none'})"
                ],
                where,
            )
        groups = [str(store.metadata(s).get(part.group_by, "")) for s in ids]
    fractions = {"train": part.public_fraction, "test": 1.0 - part.public_fraction}
    assigned = split_ids(ids, fractions, seed=part.seed, groups=groups, context=where)
    public = [s for s in ids if assigned[s] == "train"]
    private = [s for s in ids if assigned[s] == "test"]
    return public, private


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _salt(folder: Path) -> str:
    path = folder / "secret.json"
    if path.exists():
        return str(json.loads(path.read_text(encoding="utf-8"))["salt"])
    salt = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"salt": salt}, fh)
    return salt


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tar(folder: Path, dest: Path) -> str:
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            arcname = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            info = tar.gettarinfo(str(path), arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    os.replace(tmp, dest)
    digest = _sha256(dest)
    dest.with_suffix(".sha256").write_text(digest + "\n", encoding="ascii")
    return digest


def prepare_challenge(config: ChallengeConfig, root: str | os.PathLike[str]) -> PreparedChallenge:
    """Open, check and derive everything a challenge needs (built once, reused after).

    Args:
        config: The declaration.
        root: Folder for derived files (``<root>/<id>/``).

    Raises:
        ValidationError: Listing every problem (dataset not pulled, task or split not served,
            pinned metric parameters differing from the scorer's, partition impossible).
    """
    from cellbench.registry import load
    from cellbench.store.variants import (
        hidden_label_manifest,
        write_inputs,
        write_public_variant,
    )

    where = f"challenge {config.id}"
    try:
        store = load(config.dataset)
    except Exception as err:  # DatasetNotFoundError, StoreError: say how to get it
        raise ValidationError(
            [f"dataset {config.dataset}: {err} (run: cellbench datasets pull {config.dataset})"],
            where,
        ) from None
    from cellbench.store.variants import variant_of

    problems = []
    if variant_of(store):
        problems.append(
            f"dataset {config.dataset}: the cache holds its {variant_of(store).get('kind')} "
            f"variant ({store.path}), not the complete store with the hidden labels"
        )
    if config.task not in store.tasks:
        problems.append(f"dataset {config.dataset} serves {store.tasks}, not {config.task}")
    if config.hidden_split not in store.splits:
        problems.append(f"dataset {config.dataset} has no split {config.hidden_split!r}")
    unknown_meta = sorted(set(config.public_metadata) - set(store.metadata_columns))
    if unknown_meta:
        problems.append(f"public_metadata: unknown column(s) {', '.join(unknown_meta)}")
    if problems:
        raise ValidationError(problems, where)
    params = metric_parameters(config.task, store, config.hidden_split)
    if config.metric_parameters is not None:
        pinned = json.loads(json.dumps(config.metric_parameters, default=str))
        if pinned != params:
            raise ValidationError(
                [
                    f"metric_parameters pinned to {pinned} but cellbench {__version__} scores "
                    f"{config.task} with {params}; update the declaration or the scorer"
                ],
                where,
            )
    public_ids, private_ids = partition(config, store)
    folder = Path(root) / config.id
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    variant = hashlib.sha256(
        canonical_json(
            {
                "store": store.checksum,
                "hidden_split": config.hidden_split,
                "public_metadata": sorted(config.public_metadata),
                "cellbench": __version__,
            }
        )
    ).hexdigest()[:16]
    with _locked(folder / ".lock"):
        salt = _salt(folder)
        commitment = label_commitment(
            hidden_label_manifest(store, config.hidden_split), params, salt
        )
        public_store = folder / f"public-{variant}" / f"{store.id}@{store.version}.zarr"
        archive = folder / f"public-{variant}.tar"
        inputs = folder / f"inputs-{variant}.zarr"
        if not public_store.exists():
            shutil.rmtree(public_store.parent, ignore_errors=True)
            public_store.parent.mkdir()
            note = {"challenge": config.id, "label_commitment": commitment}
            write_public_variant(
                store, config.hidden_split, public_store, note, config.public_metadata
            )
        if not archive.exists():
            _tar(public_store, archive)
        if not inputs.exists():
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                built = write_inputs(
                    store, config.hidden_split, Path(tmp) / "inputs.zarr", config.public_metadata
                )
                built.path.rename(inputs)
        digest = archive.with_suffix(".sha256").read_text(encoding="ascii").strip()
    return PreparedChallenge(
        config=config,
        store=store,
        hidden_ids=store.sample_ids(config.hidden_split),
        public_ids=public_ids,
        private_ids=private_ids,
        metric_parameters=params,
        commitment=commitment,
        salt=salt,
        public_store=public_store,
        public_archive=archive,
        public_archive_sha256=digest,
        inputs_store=inputs,
        folder=folder,
    )
