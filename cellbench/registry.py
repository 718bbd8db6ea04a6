"""Pull, load, verify, export and import datasets: the registry's driver functions.

``pull`` fetches a card's sources (verified by sha256), runs the recipe and builds the canonical
store atomically in the cache; ``load`` opens a pulled or imported store without touching the
network; ``verify`` recomputes every checksum. Stores that users bring themselves are
registered with ``import_store`` and then behave like catalog datasets.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellbench.catalog import Catalog, DatasetCard, load_recipe, parse_ref
from cellbench.errors import ChecksumError, DatasetNotFoundError, FetchError, StoreError
from cellbench.store.cache import cellbench_home, is_offline, stores_dir, tmp_dir
from cellbench.store.location import is_url
from cellbench.store.sample import Sample
from cellbench.store.scratch import clean_cache, make_scratch
from cellbench.store.zarr_store import DatasetStore, build_store

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from cellbench.store.hf import ColumnMapping, HFImport

_IMPORTED = "imported.json"
#: Downloads in flight in :meth:`RecipeContext.fetch_many` (a recipe's several sources).
FETCH_WORKERS = 4


@dataclass
class RecipeContext:
    """What a recipe's ``build(context)`` gets: the card, verified sources and a work folder.

    Attributes:
        card: The dataset card being built.
        offline: Whether network access is forbidden.
        progress: Whether to show progress bars.
        work_dir: Scratch folder, removed after the build.
        options: Extra recipe options (e.g. sizes for tests).
    """

    card: DatasetCard
    offline: bool
    progress: bool
    work_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    #: sha256s first seen for unpinned sources; written to the lock file after the build.
    recorded: list[Any] = field(default_factory=list)

    def fetch(self, name: str) -> Path:
        """Fetch the card source ``name`` (verified by sha256) and return its local path.

        Sources whose upstream publishes no checksum (``sha256: unpinned``) are verified
        against the sha256 recorded on the first pull; manual sources (``manual: URL``) are
        read from the user's manual folder (see :mod:`cellbench.store.fetch.pinning`).

        Raises:
            DatasetNotFoundError: If the card declares no such source.
        """
        from cellbench.store.fetch.pinning import fetch_card_source

        if name not in self.card.sources:
            raise DatasetNotFoundError(
                f"dataset {self.card.ref}: card declares no source {name!r} "
                f"(has {', '.join(self.card.sources) or 'none'})"
            )
        return fetch_card_source(
            self.card.ref,
            self.card.id,
            name,
            self.card.sources[name],
            base_dir=self.card.path,
            offline=self.offline,
            progress=self.progress,
            pending=self.recorded,
        )

    def fetch_many(self, names: Sequence[str], workers: int = FETCH_WORKERS) -> dict[str, Path]:
        """Fetch several card sources at once (``workers`` downloads in flight), as :meth:`fetch`.

        Each source is downloaded, verified and renamed into the cache on its own, exactly as
        :meth:`fetch` does, so a failure leaves no partial file and the sources that succeeded
        stay cached for the next pull. Every source is attempted even when one fails.

        Returns:
            ``{name: local path}``, in the order of ``names``.

        Raises:
            DatasetNotFoundError: A name the card does not declare (before any download).
            FetchError: One or more sources failed: the only error as it was raised, or all
                of them, one line each.
        """
        from concurrent.futures import ThreadPoolExecutor

        unknown = [n for n in names if n not in self.card.sources]
        if unknown:
            raise DatasetNotFoundError(
                f"dataset {self.card.ref}: card declares no source {', '.join(map(repr, unknown))} "
                f"(has {', '.join(self.card.sources) or 'none'})"
            )
        with ThreadPoolExecutor(max(1, min(workers, len(names)))) as pool:
            futures = {n: pool.submit(self.fetch, n) for n in dict.fromkeys(names)}
        errors = {n: f.exception() for n, f in futures.items() if f.exception() is not None}
        if len(errors) == 1:
            raise next(iter(errors.values()))  # type: ignore[misc]
        if errors:
            lines = "\n".join(f"  - {n}: {e}" for n, e in errors.items())
            raise FetchError(
                f"dataset {self.card.ref}: {len(errors)} sources could not be fetched:\n{lines}"
            )
        return {n: futures[n].result() for n in names}


def store_path(dataset_id: str, version: str) -> Path:
    """Cache location of a built store."""
    return stores_dir() / dataset_id / f"{version}.zarr"


def public_store_path(dataset_id: str, version: str) -> Path:
    """Cache location of a store's public variant (hidden split without labels).

    ``cellbench datasets pull ID --public`` puts it there; :func:`load` opens it when the
    complete store is not in the cache.
    """
    return stores_dir() / dataset_id / f"{version}.public.zarr"


def _public_fallback(ref: str) -> Path | None:
    """The public variant's folder of a dataset the catalog does not list, if pulled."""
    ident, version = parse_ref(ref)
    if version is None:
        found = sorted((stores_dir() / ident).glob("*.public.zarr"))
        return found[0] if len(found) == 1 else None
    path = public_store_path(ident, version)
    return path if path.exists() else None


def _registry_file() -> Path:
    path = cellbench_home() / "registry"
    path.mkdir(parents=True, exist_ok=True)
    return path / _IMPORTED


def imported() -> dict[str, dict[str, Any]]:
    """Stores registered with :func:`import_store`: ``{"id@version": {"path": ...}}``."""
    path = _registry_file()
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _write_registry(entries: dict[str, dict[str, Any]]) -> None:
    path = _registry_file()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".imported.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(entries, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def resolve(ref: str, catalog: Catalog | None = None) -> tuple[str, str]:
    """Resolve ``id[@version]`` to a concrete ``(id, version)`` (imported stores included)."""
    ident, version = parse_ref(ref)
    catalog = catalog or Catalog()
    if ident in catalog.ids():
        return ident, catalog.card(ident, version).version
    matches = sorted(k for k in imported() if k.split("@", 1)[0] == ident)
    if matches:
        if version is None:
            return ident, matches[-1].split("@", 1)[1]
        if f"{ident}@{version}" in imported():
            return ident, version
        raise DatasetNotFoundError(
            f"imported dataset {ident!r} has no version {version!r} "
            f"(known: {', '.join(m.split('@', 1)[1] for m in matches)})"
        )
    catalog.card(ident, version)  # raises a helpful DatasetNotFoundError
    raise DatasetNotFoundError(f"unknown dataset {ident!r}")


def _counted(samples: Iterable[Sample], card: DatasetCard, progress: bool) -> Iterable[Sample]:
    """The samples, counted by a progress bar on stderr while the store is built."""
    from tqdm.auto import tqdm

    total = card.size.get("samples") if progress else None
    desc = f"build {card.ref}"
    yield from tqdm(
        samples, total=total, desc=desc, unit="sample", disable=None if progress else True
    )


def _recipe_samples(card: DatasetCard, ctx: RecipeContext) -> Iterable[Sample]:
    build = load_recipe(card)
    return build(ctx)


def pull(
    ref: str,
    *,
    offline: bool | None = None,
    force: bool = False,
    progress: bool = True,
    options: dict[str, Any] | None = None,
    catalog: Catalog | None = None,
    shard: bool = False,
) -> DatasetStore:
    """Fetch a dataset's sources, verify them and build its canonical store in the cache.

    A complete store already in the cache is returned as is (unless ``force``). The build is
    atomic: on any error the cache is left as it was. With ``shard``, the store is built (and
    checked against the card's digest) in the current format, then converted to the sharded
    store format 4 by :func:`upgrade` (every array's content must come out unchanged).

    Args:
        ref: ``id`` or ``id@version``.
        offline: Forbid network access (default: ``CELLBENCH_OFFLINE``).
        force: Rebuild even if the store is cached.
        progress: Show progress bars.
        options: Recipe options (e.g. smaller sizes); a store built with options is not
            checked against the card's store checksum.
        catalog: Catalog to use (default: the installed catalog).
        shard: Leave the store in store format 4 (Zarr v3 shards).

    Returns:
        The opened store.

    Raises:
        DatasetNotFoundError: Unknown id or version.
        FetchError: A source could not be fetched (or offline and not cached).
        ChecksumError: A source or the built store does not match its checksum.
    """
    if shard:
        store = pull(
            ref, offline=offline, force=force, progress=progress, options=options, catalog=catalog
        )
        return upgrade(store.ref, progress=progress, catalog=catalog, shard=True)
    catalog = catalog or Catalog()
    ident, version = parse_ref(ref)
    card = catalog.card(ident, version)
    offline = is_offline() if offline is None else offline
    dest = store_path(card.id, card.version)
    clean_cache()  # work areas of pulls that were killed
    if dest.exists() and not force:
        return DatasetStore.open(dest)
    work = make_scratch(tmp_dir(), prefix=f"{card.id}-")
    staged = work / "store.zarr"
    try:
        ctx = RecipeContext(
            card=card,
            offline=offline,
            progress=progress,
            work_dir=work,
            options=dict(options or {}),
        )
        store = build_store(
            _counted(_recipe_samples(card, ctx), card, progress and not options),
            staged,
            card.snapshot(),
            class_names=card.class_names,
            work_dir=work,
        )
        expected = card.checksums.get("store")
        if expected and not options and store.checksum != expected:
            raise ChecksumError(
                f"dataset {card.ref}: built store digest {store.checksum} does not match the "
                f"card's checksums.store {expected} (source or recipe changed?)"
            )
        if ctx.recorded:  # first pull of unpinned sources: the build verified them
            from cellbench.store.fetch.pinning import record

            record(ctx.recorded)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and force:  # move the old store aside only once the new one is ready
            dest.rename(work / "old.zarr")
        try:
            staged.rename(dest)
        except OSError:
            if not dest.exists():
                raise
            # Another process finished the same pull first; its store is equally complete.
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DatasetStore.open(dest)


def pin(ref: str, *, progress: bool = False, catalog: Catalog | None = None) -> dict[str, Any]:
    """Write the sha256s recorded for ``ref``'s unpinned sources and its store digest into its card.

    For maintainers, after a verified pull: every ``sha256: unpinned`` source with a record in
    the lock file gets that sha256, then the store is rebuilt from the cached sources (offline;
    pinning changes the card snapshot inside the store, hence the digest) and ``checksums.store``
    is set to the new digest. The card file is rewritten atomically, every other line kept.

    Returns:
        ``{"card": path, "sources": {name: sha256}, "store": digest}``.

    Raises:
        CardError: The card has no file, or unpinned sources were never pulled.
    """
    from cellbench.errors import CardError
    from cellbench.store.fetch.pinning import is_unpinned, pin_card_text, read_lock

    catalog = catalog or Catalog()
    ident, version = parse_ref(ref)
    card = catalog.card(ident, version)
    if card.path is None:
        raise CardError(f"dataset {card.ref}: card has no file to write")
    card_file = card.path / "card.yaml"
    locked = read_lock().get(card.ref, {})
    unpinned = [n for n, e in card.sources.items() if is_unpinned(e)]
    missing = [n for n in unpinned if n not in locked]
    if missing:
        raise CardError(
            f"dataset {card.ref}: no sha256 recorded for unpinned source(s) "
            f"{', '.join(missing)}; run `cellbench datasets pull {card.ref}` first"
        )
    shas = {n: str(locked[n]["sha256"]) for n in unpinned}
    original = card_file.read_text(encoding="utf-8")

    def write(text: str) -> None:
        tmp = card_file.with_name(f".{card_file.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, card_file)

    text, _ = pin_card_text(original, shas, None)
    write(text)
    try:
        fresh = Catalog(catalog.roots)
        store = pull(card.ref, force=True, offline=True, progress=progress, catalog=fresh)
        text, _ = pin_card_text(text, {}, store.checksum)
        write(text)
    except BaseException:
        write(original)  # never leave a half-pinned card
        raise
    return {"card": card_file, "sources": shas, "store": store.checksum}


def store_location(ref: str, catalog: Catalog | None = None) -> Path:
    """Folder of a pulled or imported dataset's store, without opening it.

    Raises:
        DatasetNotFoundError: If the dataset is unknown or not pulled yet.
    """
    catalog = catalog or Catalog()
    try:
        ident, version = resolve(ref, catalog)
    except DatasetNotFoundError:
        public = _public_fallback(ref)
        if public is None:
            raise
        return public
    key = f"{ident}@{version}"
    entry = imported().get(key)
    if entry is not None:
        path = Path(entry["path"])
        if not path.exists():
            raise DatasetNotFoundError(
                f"imported dataset {key}: its store {path} no longer exists; import it again"
            )
        return path
    path = store_path(ident, version)
    if not path.exists() and public_store_path(ident, version).exists():
        return public_store_path(ident, version)
    if not path.exists():
        raise DatasetNotFoundError(
            f"dataset {key} is not in the cache ({path}); run `cellbench datasets pull {key}`"
        )
    return path


def load(ref: str, catalog: Catalog | None = None) -> DatasetStore:
    """Open a pulled or imported dataset; never touches the network.

    Every later read of the store is checked against its manifest (see
    :class:`~cellbench.store.zarr_store.DatasetStore`).

    Raises:
        DatasetNotFoundError: If the dataset is unknown or not pulled yet.
        StoreError: If the store is half-built, foreign or damaged (one line, naming the repair).
    """
    if is_url(ref):
        return DatasetStore.open(ref)
    return DatasetStore.open(store_location(ref, catalog))


def pull_to(
    ref: str,
    url: str,
    *,
    offline: bool | None = None,
    force: bool = False,
    progress: bool = True,
    catalog: Catalog | None = None,
    shard: bool = False,
) -> DatasetStore:
    """Pull a dataset (see :func:`pull`), verify it, then upload it to an fsspec URL.

    The store is built (or found) in the local cache and verified completely before anything is
    uploaded; the upload writes the root ``zarr.json`` last (see
    :func:`cellbench.store.remote.upload_store`), so an interrupted upload leaves nothing that
    opens as a store.

    Args:
        ref: ``id`` or ``id@version``.
        url: Destination, e.g. ``s3://bucket/prefix``; the store goes to
            ``<url>/<id>@<version>.zarr`` unless ``url`` already ends in ``.zarr``.
        offline: Forbid network access for the sources (the upload still needs the URL).
        force: Rebuild the local store and replace a store already at the destination.
        progress: Show progress bars.
        catalog: Catalog to use.
        shard: Upload the store in store format 4 (see :func:`pull`).

    Returns:
        The store opened at its URL.

    Raises:
        StoreError: The local store does not verify, or the upload failed.
    """
    from cellbench.store.integrity import verify_store
    from cellbench.store.remote import upload_store

    local = pull(ref, offline=offline, force=force, progress=progress, catalog=catalog, shard=shard)
    problems = verify_store(local.path, progress=progress)
    if problems:
        raise StoreError(
            f"{local.ref}: the local store does not verify ({len(problems)} problem(s)), "
            f"nothing uploaded: " + "; ".join(problems[:3])
        )
    url = url.rstrip("/")
    dest = url if url.endswith(".zarr") else f"{url}/{local.id}@{local.version}.zarr"
    upload_store(local.path, dest, force=force, progress=progress)
    return DatasetStore.open(dest)


def upgrade(
    ref: str, *, progress: bool = False, catalog: Catalog | None = None, shard: bool = False
) -> DatasetStore:
    """Rewrite a pulled or imported store in the current store format, on request only.

    The store is verified first (a damaged store is not converted: pull it again with
    ``--force``), converted sample by sample into a new store beside it, and swapped in once
    complete; until then the old store stays in place. A catalog dataset whose card pins a
    store digest must convert to exactly that digest; otherwise (for example a format 1 store
    of a dataset whose metadata the current card corrects) nothing changes and the message
    says to rebuild it from its sources with ``cellbench datasets pull ID --force``.

    With ``shard``, the store is rewritten in store format 4 (arrays in Zarr v3 shards) unless
    it is already sharded. The digest then changes with the format, so instead of the card's
    pin every array's decoded content (its manifest sha256, shape and dtype) must be the old
    store's.

    Args:
        ref: ``id`` or ``id@version``.
        progress: Show progress bars.
        catalog: Catalog to use (default: the installed catalog).
        shard: Convert to the sharded store format 4.

    Returns:
        The opened store (unchanged when it already has the current format).

    Raises:
        StoreError: If the store does not verify.
        ChecksumError: If the converted store does not match the card's pinned digest.
    """
    from cellbench.store.format import CURRENT_FORMAT, FORMATS, is_current
    from cellbench.store.integrity import forget_verdicts

    catalog = catalog or Catalog()
    path = store_location(ref, catalog)
    store = DatasetStore.open(path)
    key = store.ref
    if store.format.sharded or (is_current(store.format) and not shard):
        return store
    clean_cache()
    problems = store.verify(progress=progress)
    if problems:
        raise StoreError(
            f"{key}: the format {store.format.version} store does not verify "
            f"({len(problems)} problem(s), first: {problems[0]}), so it is not converted; "
            f"rebuild it with `cellbench datasets pull {key} --force`"
        )
    work = make_scratch(path.parent, prefix=f".{path.name}.upgrade-")
    try:
        new = build_store(
            store.samples(),
            work / "new.zarr",
            store.card,
            class_names=store.meta.get("classes") or None,
            work_dir=work,
            fmt=FORMATS["4"] if shard else CURRENT_FORMAT,
        )
        if shard:
            _same_content(key, store, new)
        pin = None
        if not shard and store.id in catalog.ids():
            try:
                pin = catalog.card(store.id, store.version).checksums.get("store")
            except DatasetNotFoundError:
                pin = None
        if pin and new.checksum != pin:
            raise ChecksumError(
                f"{key}: converted store digest {new.checksum} does not match the card's "
                f"checksums.store {pin} (the card changed what the store holds); the format "
                f"{store.format.version} store is kept: rebuild it from its sources with "
                f"`cellbench datasets pull {key} --force`"
            )
        path.rename(work / "old.zarr")
        (work / "new.zarr").rename(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    forget_verdicts()
    return DatasetStore.open(path)


def _same_content(key: str, old: DatasetStore, new: DatasetStore) -> None:
    """Raise unless both stores hold the same arrays with the same decoded content."""

    def content(store: DatasetStore) -> dict[str, tuple[Any, ...]]:
        arrays = store.manifest["arrays"]
        return {p: (e["sha256"], list(e["shape"]), e["dtype"]) for p, e in arrays.items()}

    before, after = content(old), content(new)
    differ = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if differ:
        raise ChecksumError(
            f"{key}: the sharded copy differs from the store in {len(differ)} array(s) "
            f"(first: {differ[0]}); the format {old.format.version} store is kept"
        )


def open_dataset(dataset: DatasetStore | str | os.PathLike[str]) -> DatasetStore:
    """Open a dataset given as a store, a store path, or ``id[@version]`` (pulled/imported).

    The one resolver that training, inference and scoring use: an existing path wins, anything
    else is looked up with :func:`load`.

    Raises:
        DatasetNotFoundError: If it is neither a store path nor a pulled or imported dataset.
    """
    if isinstance(dataset, DatasetStore):
        return dataset
    if is_url(dataset):
        return DatasetStore.open(str(dataset))
    path = Path(dataset).expanduser()
    if path.exists():
        return DatasetStore.open(path)
    return load(str(dataset))


def verify(ref: str, progress: bool = False) -> list[str]:
    """Recompute every checksum of a pulled/imported store; one line per problem.

    Works on stores too damaged to open (see :func:`cellbench.store.integrity.verify_store`).
    """
    from cellbench.store.integrity import verify_store

    return verify_store(store_location(ref), progress=progress)


def export_zarr(ref: str, dest: str | Path) -> Path:
    """Copy a store to ``dest`` atomically (copy to a temp name, then rename)."""
    store = load(ref)
    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest}: already exists; choose a new destination")
    return _copy_tree_atomic(store.path, dest)


def _copy_tree_atomic(src: Path, dest: Path) -> Path:
    """Copy a store folder under a temporary name, then rename; nothing partial is left."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def import_store(path: str | Path, *, copy: bool = False) -> DatasetStore:
    """Register a user's own canonical store so ``load``/``score`` can use it by id.

    The store is verified first (every checksum); a store that fails verification is not
    registered.

    Args:
        path: A cellbench Zarr store directory.
        copy: Copy it into the cache instead of referencing it in place.

    Raises:
        StoreError: If the store is invalid or does not verify.
    """
    store = DatasetStore.open(path)
    problems = store.verify()
    if problems:
        raise StoreError(
            f"{path}: store does not verify ({len(problems)} problem(s)): " + "; ".join(problems)
        )
    if Catalog().ids().count(store.id):
        raise StoreError(
            f"{path}: dataset id {store.id!r} belongs to the catalog; give your store another id"
        )
    final = Path(path).resolve()
    if copy:
        final = store_path(store.id, store.version)
        if final.exists():
            raise StoreError(f"{final}: a store for {store.id}@{store.version} is already cached")
        _copy_tree_atomic(store.path, final)
    entries = imported()
    entries[f"{store.id}@{store.version}"] = {"path": str(final)}
    _write_registry(entries)
    return DatasetStore.open(final)


def export_hf(
    ref: str,
    dest: str | Path,
    *,
    max_shard_size: int | str = "500MB",
    compression: str = "zstd",
    progress: bool = False,
) -> Path:
    """Export a pulled or imported dataset as Hugging Face Parquet shards, atomically.

    See :mod:`cellbench.store.hf` for the columns, features and folder layout.

    Args:
        ref: ``id`` or ``id@version``.
        dest: New folder (must not exist).
        max_shard_size: Largest Parquet shard (bytes or ``"500MB"``).
        compression: Parquet codec.
        progress: Show a progress bar.

    Returns:
        ``dest``.
    """
    from cellbench.store import hf

    return hf.write_parquet(
        load(ref), dest, max_shard_size=max_shard_size, compression=compression, progress=progress
    )


def push_to_hub(
    ref: str,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    max_shard_size: int | str | None = None,
    progress: bool = False,
    offline: bool | None = None,
) -> str:
    """Push a pulled or imported dataset to the Hugging Face Hub (data, card and metadata).

    Args:
        ref: ``id`` or ``id@version``.
        repo_id: ``user/name`` or ``org/name``.
        token: Hub token (default: ``HF_TOKEN`` or the stored login).
        private: Create the repository as private.
        max_shard_size: Largest Parquet shard.
        progress: Show progress bars.
        offline: Refuse to touch the network (default: ``CELLBENCH_OFFLINE``).

    Returns:
        The dataset's URL.
    """
    from cellbench.store import hf

    return hf.push_to_hub(
        load(ref),
        repo_id,
        token=token,
        private=private,
        max_shard_size=max_shard_size,
        progress=progress,
        offline=offline,
    )


def import_hf(
    source: str | Path | DatasetDict | Dataset,
    *,
    mapping: ColumnMapping | None = None,
    dataset_id: str | None = None,
    version: str | None = None,
    metadata: dict[str, Any] | str | Path | None = None,
    progress: bool = False,
) -> DatasetStore:
    """Convert a Hugging Face dataset into a canonical store in the cache and register it.

    The store is built in the cache's scratch area and moved into place only when complete
    (and, for a cellbench export, when its digest matches the exported one), so a failed
    import leaves nothing in the cache. Afterwards ``load("<id>@<version>")`` opens it.

    Args:
        source: Parquet folder, ``save_to_disk`` folder, or a ``DatasetDict``/``Dataset``.
        mapping: :class:`cellbench.store.hf.ColumnMapping` for datasets not exported by
            cellbench.
        dataset_id: New id for a cellbench export (the digest check is then skipped).
        version: New version for a cellbench export (the digest check is then skipped).
        metadata: The export's ``cellbench.json`` (mapping or path) for a dataset that lost it
            (e.g. loaded from the Hub with ``load_dataset``).
        progress: Show a progress bar.

    Returns:
        The opened store.

    Raises:
        StoreError: Unreadable source, an id of the catalog, or already imported.
        ValidationError: Missing or mistyped columns, bad mapping or samples.
        ChecksumError: A cellbench export that does not rebuild to its digest.
    """
    from cellbench.store import hf

    plan = hf.plan_import(
        source, mapping=mapping, dataset_id=dataset_id, version=version, metadata=metadata
    )
    ident, ver = str(plan.card["id"]), str(plan.card["version"])
    key = f"{ident}@{ver}"
    if ident in Catalog().ids():
        return _import_catalog_export(plan, ident, ver, progress)
    dest = store_path(ident, ver)
    if key in imported() or dest.exists():
        where = imported().get(key, {}).get("path", dest)
        raise StoreError(f"{key} is already imported ({where}); choose another version (--version)")
    clean_cache()
    work = make_scratch(tmp_dir(), prefix=f"import-{ident}-")
    try:
        store = plan.build(dest, work_dir=work, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    entries = imported()
    entries[key] = {"path": str(store.path)}
    _write_registry(entries)
    return store


def _import_catalog_export(
    plan: HFImport, ident: str, version: str, progress: bool
) -> DatasetStore:
    """Import an export of a catalog dataset: bit-exact against the cached or pinned store.

    The rebuilt store must have the exported digest (checked by the build) and that digest must
    be the one of the catalog's store: the cached store's, else the card's pinned
    ``checksums.store``. A cached store stays as it is (the rebuild is discarded once compared);
    otherwise the rebuild becomes the cached catalog store, as a pull would have made it.
    """
    catalog = Catalog()
    card = catalog.card(ident, version if version in catalog.versions(ident) else None)
    where = plan.source.name
    other = f"import it under another id (--id) or run `cellbench datasets pull {ident}`"
    if card.version != version or plan.expected_digest is None:
        raise StoreError(f"{where}: dataset id {ident!r} belongs to the catalog; {other}")
    dest = store_path(ident, version)
    cached = DatasetStore.open(dest).checksum if dest.exists() else None
    reference = cached or card.checksums.get("store")
    if reference is None:
        raise StoreError(
            f"{where}: {ident}@{version} is a catalog dataset without a pinned digest and is not "
            f"cached, so the export cannot be checked against it; {other}"
        )
    if plan.expected_digest != reference:
        raise StoreError(
            f"{where}: exported digest {plan.expected_digest} differs from the catalog store's "
            f"{reference} ({ident}@{version}); {other}"
        )
    if cached is None:
        return plan.build(dest, work_dir=tmp_dir(), progress=progress)
    scratch = Path(tempfile.mkdtemp(prefix=f".{ident}-import-", dir=tmp_dir()))
    try:
        plan.build(scratch / "store.zarr", work_dir=scratch, progress=progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return DatasetStore.open(dest)


def import_path(
    path: str | Path,
    *,
    copy: bool = False,
    mapping: ColumnMapping | None = None,
    dataset_id: str | None = None,
    version: str | None = None,
    progress: bool = False,
) -> DatasetStore:
    """Import a folder, telling a cellbench Zarr store from a Hugging Face dataset.

    A Zarr store goes through :func:`import_store`; a ``save_to_disk`` or Parquet folder
    through :func:`import_hf`.

    Args:
        path: The folder.
        copy: Copy a Zarr store into the cache (HF datasets are always converted into it).
        mapping: Column mapping (HF datasets only).
        dataset_id: New id (HF cellbench exports only).
        version: New version (HF cellbench exports only).
        progress: Show a progress bar.

    Returns:
        The opened store.

    Raises:
        StoreError: If the folder is neither, or HF options are given for a Zarr store.
    """
    from cellbench.store import hf

    if hf.detect_source(path) == "zarr":
        if mapping is not None or dataset_id is not None or version is not None:
            raise StoreError(
                f"{path}: is a cellbench Zarr store; column mapping, id and version options "
                "apply to Hugging Face datasets only"
            )
        return import_store(path, copy=copy)
    return import_hf(
        path, mapping=mapping, dataset_id=dataset_id, version=version, progress=progress
    )
