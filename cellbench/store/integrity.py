"""Integrity of a canonical store: the parsed manifest, verified reads and full verification.

Three pieces, all driven by the store's ``manifest.json`` (see :mod:`cellbench.store.checksums`):

:class:`StoreManifest`
    The manifest, read without trusting it: malformed JSON, a wrong structure or (format 2) a
    ``manifest_sha256`` that does not match its content is a :class:`~cellbench.errors.StoreError`
    of one line, never a traceback.
:class:`ManifestCheck` (and :class:`~cellbench.store.verified.VerifiedStore`, the Zarr store
    wrapper that applies it)
    What every read of :class:`~cellbench.store.zarr_store.DatasetStore` goes through, with
    Zarr or without (:mod:`cellbench.store.chunk_reader`): every chunk file is hashed as it
    is read and compared with the manifest (format
    2), every node's ``zarr.json`` is compared with its canonical digest (format 2) or at least
    parsed (format 1), a node the manifest does not list is refused (format 2), and a missing
    chunk is an error unless the manifest declares the array sparse, because Zarr would
    silently read it as the fill value. Format 1 manifests hold one digest per whole array, so
    :class:`~cellbench.store.zarr_store.DatasetStore` hashes a format 1 array's decoded content
    on its first read in a process and keeps the verdict (:func:`remember_verdict`).
:func:`verify_store`
    Everything checked at once, from the files (a store that cannot even be opened is still
    verified as far as possible): root attributes and digest, the manifest itself, every node,
    every array's chunk files and decoded content, and files the manifest does not know. One
    line per damaged node or array, so several corruptions are listed together.

Every problem found while reading raises :class:`~cellbench.errors.CorruptStoreError` with one
line naming the dataset, the array, the sample and the command that repairs the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.errors import CorruptStoreError, StoreError
from cellbench.store import checksums
from cellbench.store.format import FORMATS, StoreFormat

_ROOT_KEYS = ("zarr.json", checksums.MANIFEST_NAME)
_META = "zarr.json"
#: Distinct checked ``zarr.json`` documents a :class:`ManifestCheck` keeps parsed.
_METAS_KEPT = 256


def repair_hint(ref: str | None) -> str:
    """The command that repairs a damaged store of dataset ``ref`` (``id@version``)."""
    if not ref:
        return "rebuild or re-import the store"
    ident = ref.split("@", 1)[0]
    try:
        from cellbench.catalog import Catalog

        in_catalog = ident in Catalog().ids()
    except Exception:  # an unreadable catalog must not hide the corruption being reported
        in_catalog = True
    if in_catalog:
        return f"repair it with `cellbench datasets pull {ref} --force`"
    return f"repair it by re-importing the store (`cellbench datasets import PATH`) of {ref}"


@dataclass
class StoreManifest:
    """A store's parsed manifest.

    Attributes:
        data: The manifest JSON.
        format: The store format the manifest says it belongs to.
        arrays: Per-array entries (content sha256, shape, dtype, chunks; format 2 also
            ``sparse`` and ``chunk_sha256``).
        nodes: Per-node metadata entries (format 2; empty for format 1).
    """

    data: dict[str, Any]
    format: StoreFormat
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """The store digest the manifest records."""
        return str(self.data.get("digest", ""))

    @property
    def covers_metadata(self) -> bool:
        """Whether node metadata and chunk files are covered (format 2 and later)."""
        return self.format.manifest_covers_metadata

    @classmethod
    def parse(cls, raw: bytes, where: str) -> tuple[StoreManifest | None, list[str]]:
        """Parse manifest bytes; ``(manifest or None, problems)``.

        A manifest whose own checksum fails is returned with a problem, so verification can
        still compare the files against it; one that cannot be understood is None.
        """
        try:
            data = json.loads(raw)
        except ValueError as err:
            return None, [f"{where}: manifest is unreadable ({_short(err)})"]
        if not isinstance(data, dict):
            return None, [f"{where}: manifest is not a JSON object"]
        version = str(data.get("format_version"))
        fmt = FORMATS.get(version)
        if fmt is None:
            return None, [f"{where}: manifest has unknown format version {version!r}"]
        problems: list[str] = []
        arrays = data.get("arrays")
        nodes = data.get("nodes", {}) if fmt.manifest_covers_metadata else {}
        if not isinstance(arrays, dict) or not all(_entry_ok(e, fmt) for e in arrays.values()):
            return None, [f"{where}: manifest 'arrays' is malformed"]
        if not isinstance(nodes, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("zarr_json_sha256"), str)
            for e in nodes.values()
        ):
            return None, [f"{where}: manifest 'nodes' is malformed"]
        if not isinstance(data.get("digest"), str):
            return None, [f"{where}: manifest has no store digest"]
        if fmt.manifest_covers_metadata and data.get(
            "manifest_sha256"
        ) != checksums.manifest_self_sha256(data):
            problems.append(
                f"{where}: manifest content does not match its own manifest_sha256 "
                "(manifest.json was edited or damaged)"
            )
        return cls(data=data, format=fmt, arrays=arrays, nodes=nodes), problems

    @classmethod
    def read(cls, path: Path, ref: str | None = None) -> StoreManifest:
        """Read and check a store's manifest.

        Raises:
            StoreError: One line when the manifest is missing, unreadable or damaged.
        """
        file = path / checksums.MANIFEST_NAME
        if not file.is_file():
            raise StoreError(f"{path}: store has no {checksums.MANIFEST_NAME}; {repair_hint(ref)}")
        try:
            raw = file.read_bytes()
        except OSError as err:
            raise StoreError(f"{file}: unreadable ({err}); {repair_hint(ref)}") from None
        manifest, problems = cls.parse(raw, str(file))
        if manifest is None or problems:
            raise CorruptStoreError(f"{problems[0]}; {repair_hint(ref)}")
        return manifest

    def locate(self, key: str) -> tuple[str, str] | None:
        """``(array path, chunk key)`` if ``key`` is a chunk of a manifest array."""
        start = 0
        while True:
            i = key.find("/c", start)
            if i < 0:
                return None
            rest = key[i + 1 :]
            if (rest == "c" or rest.startswith("c/")) and key[:i] in self.arrays:
                return key[:i], rest
            start = i + 1


def _entry_ok(entry: Any, fmt: StoreFormat) -> bool:
    if not isinstance(entry, dict):
        return False
    if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("shape"), list):
        return False
    if fmt.manifest_covers_metadata:
        return isinstance(entry.get("chunk_sha256"), dict)
    return True


def _short(err: BaseException) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


class ManifestCheck:
    """Checks the bytes of a store's files against its manifest (no Zarr needed).

    Used by :class:`VerifiedStore` (Zarr reads) and by
    :class:`~cellbench.store.chunk_reader.StoreFiles` (whole-array reads without Zarr), so
    both refuse exactly the same files with exactly the same lines.

    Args:
        manifest: The store's manifest.
        ref: ``id@version`` for messages.
    """

    manifest: StoreManifest
    ref: str

    def __init__(self, manifest: StoreManifest, ref: str) -> None:
        self.manifest = manifest
        self.ref = ref
        # zarr.json bytes already checked -> (their manifest digest, parsed): the arrays of a
        # store mostly share a few metadata documents, and parsing + hashing one costs more
        # than reading it (readers must not change what they get back)
        self._metas: dict[bytes, tuple[str, dict[str, Any]]] = {}

    def _fail(self, path: str, problem: str, node: str = "array") -> CorruptStoreError:
        sample = self.manifest.format.sample_of(path)
        who = f" (sample {sample!r})" if sample else ""
        return CorruptStoreError(
            f"dataset {self.ref}: {node} {path!r}{who} {problem}; {repair_hint(self.ref)}"
        )

    def range_record(self, key: str) -> dict[str, Any] | None:
        """The per-range digests of shard file ``key`` (store format 4), or None."""
        located = self.manifest.locate(key)
        if located is None:
            return None
        path, chunk = located
        record = self.manifest.arrays[path].get("shard_ranges", {}).get(chunk)
        return record if isinstance(record, dict) else None

    def check_pieces(self, key: str, pieces: list[tuple[int, int, str]], data: bytes) -> None:
        """Raise unless ``data``, the bytes of ``pieces`` laid end to end, match their digests."""
        at = 0
        view = memoryview(data)  # slices without copies
        for a, b, want in pieces:
            if hashlib.sha256(view[at : at + b - a]).hexdigest() != want:
                path, chunk = self.manifest.locate(key) or (key, "")
                raise self._fail(
                    path,
                    f"chunk file {chunk} does not match the manifest (sha256 of bytes {a}:{b})",
                )
            at += b - a
        if at != len(data):
            path, chunk = self.manifest.locate(key) or (key, "")
            raise self._fail(path, f"chunk file {chunk} is shorter than the manifest says")

    def check(self, key: str, data: bytes | None) -> dict[str, Any] | None:
        """Raise :class:`CorruptStoreError` if the bytes of ``key`` disagree with the manifest.

        Returns:
            The parsed ``zarr.json`` when ``key`` is a node's metadata below the root (parsed
            here to be checked, so readers need not parse it again), else None.
        """
        if key in _ROOT_KEYS:
            return None
        man = self.manifest
        if key.endswith("/" + _META):
            node = key[: -len(_META) - 1]
            entry = man.nodes.get(node)
            kind = "array" if node in man.arrays else "node"
            if data is None:
                if entry is not None or node in man.arrays:
                    raise self._fail(node, "is missing (no zarr.json)", kind)
                return None
            if man.covers_metadata and entry is not None and isinstance(data, bytes):
                known = self._metas.get(data)
                if known is not None and known[0] == entry["zarr_json_sha256"]:
                    return known[1]  # these very bytes matched this digest before
            try:
                meta = json.loads(data)
            except ValueError as err:
                raise self._fail(node, f"has unreadable zarr.json ({_short(err)})", kind) from None
            if not man.covers_metadata:
                return meta
            if entry is None:
                raise self._fail(node, "is not in the store manifest", kind)
            if checksums.json_sha256(meta) != entry["zarr_json_sha256"]:
                raise self._fail(node, "metadata (zarr.json) does not match the manifest", kind)
            if isinstance(data, bytes):
                if len(self._metas) >= _METAS_KEPT:
                    del self._metas[next(iter(self._metas))]
                self._metas[data] = (entry["zarr_json_sha256"], meta)
            return meta
        located = man.locate(key)
        if located is None:
            return None
        path, chunk = located
        entry = man.arrays[path]
        sparse = bool(entry.get("sparse", False))
        expected = entry.get("chunk_sha256", {}) if man.covers_metadata else None
        if data is None:
            if not sparse or (expected is not None and chunk in expected):
                raise self._fail(path, f"is missing chunk file {chunk}")
            return None
        if expected is None:
            return None  # format 1: whole-array digests, checked by the reader on first use
        want = expected.get(chunk)
        if want is None:
            raise self._fail(path, f"has chunk file {chunk} that the manifest does not list")
        if hashlib.sha256(data).hexdigest() != want:
            raise self._fail(path, f"chunk file {chunk} does not match the manifest (sha256)")
        return None


def __getattr__(name: str) -> Any:
    # VerifiedStore is a Zarr store: defined in cellbench.store.verified so that reading a
    # store without Zarr (cellbench.store.chunk_reader) never imports zarr.
    if name == "VerifiedStore":
        from cellbench.store.verified import VerifiedStore

        return VerifiedStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- verdict cache
_VERDICTS: dict[tuple[str, str, str], bool] = {}
_VERDICT_LOCK = threading.Lock()


def _verdict_key(root: Path, digest: str, path: str) -> tuple[str, str, str]:
    return (os.path.realpath(root), digest, path)


def known_verdict(root: Path, digest: str, path: str) -> bool:
    """Whether this process already verified array ``path`` of the store (format 1 reads)."""
    with _VERDICT_LOCK:
        return _VERDICTS.get(_verdict_key(root, digest, path), False)


def remember_verdict(root: Path, digest: str, path: str) -> None:
    """Record that array ``path`` of the store matched its manifest digest in this process."""
    with _VERDICT_LOCK:
        _VERDICTS[_verdict_key(root, digest, path)] = True


def forget_verdicts() -> None:
    """Drop every cached verdict (tests; a store rewritten in place)."""
    with _VERDICT_LOCK:
        _VERDICTS.clear()


# ---------------------------------------------------------------------- full verification
def verify_store(
    path: str | os.PathLike[str], progress: bool = False, scheduler: str | None = None
) -> list[str]:
    """Check a store folder completely and list every problem (empty: the store is intact).

    Works on stores that cannot be opened (a truncated manifest or root ``zarr.json`` is one
    problem, not a crash). Checks, in one pass: the root attributes (format, completeness, and
    the store digest recomputed from them and the manifest); the manifest's own checksum
    (format 2); every node's ``zarr.json`` against its digest (format 2: axes, channel names,
    pixel sizes, class tables, label properties, sparse flags); every array's shape, dtype,
    chunk files (present, and each file's sha256 in format 2) and decoded content sha256; and
    every file the manifest does not account for.

    Args:
        path: The store folder.
        progress: Show a progress bar over arrays.
        scheduler: None: check the arrays one after the other here. Otherwise one Dask task
            per array (see :mod:`cellbench.parallel`); the problems are the same, in order.

    Returns:
        One line per damaged node or array and per unknown file.
    """
    import zarr
    from tqdm.auto import tqdm

    from cellbench.store.format import STORE_KIND, read_root_attributes

    root = Path(path)
    where = str(root)
    if not root.is_dir():
        return [f"{where}: no store here (not a folder)"]
    problems: list[str] = []
    meta: dict[str, Any] | None = None
    try:
        attrs = read_root_attributes(root)
        cb = attrs.get("cellbench")
        if not isinstance(cb, dict) or cb.get("format") != STORE_KIND:
            problems.append(f"{where}: root zarr.json has no cellbench attributes")
        else:
            meta = cb
            if cb.get("complete") is not True:
                problems.append(f"{where}: store is incomplete (interrupted build)")
    except StoreError as err:
        problems.append(str(err))

    manifest_file = root / checksums.MANIFEST_NAME
    if not manifest_file.is_file():
        problems.append(f"{where}: {checksums.MANIFEST_NAME} is missing")
        return problems
    manifest, found = StoreManifest.parse(manifest_file.read_bytes(), str(manifest_file))
    problems += found
    if manifest is None:
        return problems
    if meta is not None:
        if str(meta.get("format_version")) != manifest.format.version:
            problems.append(
                f"{where}: root says format {meta.get('format_version')!r}, manifest says "
                f"{manifest.format.version!r}"
            )
        else:
            try:
                digest = checksums.store_digest(manifest.data, meta)
            except (KeyError, TypeError, ValueError) as err:
                digest = f"(cannot be computed: {_short(err)})"
            if digest != manifest.digest:
                problems.append(
                    f"{where}: store digest {digest[:12]}... does not match manifest "
                    f"{manifest.digest[:12]}... (card snapshot or root attributes changed)"
                )

    bad_nodes: set[str] = set()
    for node, entry in sorted(manifest.nodes.items()):
        kind = "array" if node in manifest.arrays else "node"
        file = root / node / _META
        if not file.is_file():
            problems.append(f"{where}: {kind} {node!r} is missing")
            bad_nodes.add(node)
            continue
        try:
            node_meta = json.loads(file.read_bytes())
        except (OSError, ValueError) as err:
            problems.append(f"{where}: {kind} {node!r} has an unreadable zarr.json ({_short(err)})")
            bad_nodes.add(node)
            continue
        if checksums.json_sha256(node_meta) != entry["zarr_json_sha256"]:
            semantic = (
                checksums.json_sha256(checksums.node_semantics(node_meta))
                if isinstance(node_meta, dict)
                else ""
            )
            what = (
                "attributes changed (axes, pixel sizes, channel names, classes or labels)"
                if semantic != entry.get("semantic_sha256")
                else "encoding changed (codecs, chunking or shape)"
            )
            problems.append(
                f"{where}: {kind} {node!r} metadata does not match the manifest: {what}"
            )
            bad_nodes.add(node)

    items = sorted(manifest.arrays.items())
    if scheduler is not None:
        from cellbench.parallel import verify_arrays

        todo = [apath for apath, _ in items if apath not in bad_nodes]
        problems += verify_arrays(where, todo, manifest, scheduler=scheduler, progress=progress)
        problems += _unknown_files(root, where, manifest)
        return problems
    bar = tqdm(items, desc="verify", unit="array", disable=None if progress else True)
    for apath, entry in bar:
        if apath in bad_nodes:
            continue
        problems += _array_problems(zarr, root, where, apath, entry, manifest)
    problems += _unknown_files(root, where, manifest)
    return problems


def _array_problems(
    zarr: Any, root: Path, where: str, apath: str, entry: dict[str, Any], manifest: StoreManifest
) -> list[str]:
    label = f"{where}: array {apath!r}"
    meta_file = root / apath / _META
    if not meta_file.is_file():
        return [f"{label} is missing"]
    try:
        json.loads(meta_file.read_bytes())
        arr = zarr.open_array(
            zarr.storage.LocalStore(root / apath, read_only=True), mode="r", zarr_format=3
        )
    except Exception as err:  # malformed metadata raises from json, zarr or numcodecs
        return [f"{label} has unreadable metadata ({_short(err)})"]
    if list(arr.shape) != list(entry["shape"]):
        return [f"{label} has shape {list(arr.shape)}, manifest says {entry['shape']}"]
    keys = checksums.expected_chunk_keys(arr)
    sparse = bool(entry.get("sparse", False))
    listed: dict[str, str] | None = entry.get("chunk_sha256") if manifest.covers_metadata else None
    missing, damaged, unexpected = [], [], []
    for key in keys:
        file = root / apath / key
        if not file.is_file():
            if not sparse or (listed is not None and key in listed):
                missing.append(key)
            continue
        if listed is not None:
            want = listed.get(key)
            if want is None:
                unexpected.append(key)
            elif checksums.file_sha256(file) != want:
                damaged.append(key)
    parts = []
    for what, keys_ in (
        ("is missing {n} chunk file(s)", missing),
        ("has {n} corrupt chunk file(s) (sha256 differs from the manifest)", damaged),
        ("has {n} chunk file(s) that the manifest does not list", unexpected),
    ):
        if keys_:
            shown = ", ".join(keys_[:5]) + (" ..." if len(keys_) > 5 else "")
            parts.append(f"{what.format(n=len(keys_))}: {shown}")
    if parts:
        return [f"{label} " + "; ".join(parts)]
    try:
        digest = checksums.hash_zarr_array(arr)
    except Exception as err:  # decoding errors come from several codec libraries
        return [f"{label} has a corrupt chunk ({_short(err)})"]
    if digest != entry["sha256"]:
        return [
            f"{label} content sha256 {digest[:12]}... does not match manifest "
            f"{entry['sha256'][:12]}..."
        ]
    return []


def _unknown_files(root: Path, where: str, manifest: StoreManifest) -> list[str]:
    """Files the manifest does not account for (one line per unknown node or loose file)."""
    known_nodes = set(manifest.nodes) | set(manifest.arrays)
    if not manifest.covers_metadata:  # format 1 lists arrays only: allow their ancestor groups
        for apath in manifest.arrays:
            parts = apath.split("/")
            known_nodes.update("/".join(parts[:i]) for i in range(1, len(parts)))
        known_nodes.add("samples/metadata")
    out: list[str] = []
    unknown_nodes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        if any(rel_dir == u or rel_dir.startswith(u + "/") for u in unknown_nodes):
            continue
        if _META in filenames and rel_dir and rel_dir not in known_nodes:
            kind = "node"
            with contextlib.suppress(OSError, ValueError, AttributeError):
                kind = str(json.loads((Path(dirpath) / _META).read_bytes()).get("node_type"))
            out.append(f"{where}: {kind} {rel_dir!r} is not in the manifest")
            unknown_nodes.append(rel_dir)
            continue
        owner = _owning_array(rel_dir, manifest)
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel_dir == "" and name in _ROOT_KEYS:
                continue
            if name == _META and rel_dir in known_nodes:
                continue
            if owner is not None:
                apath, prefix = owner
                chunk = f"{prefix}/{name}" if prefix else name
                if _is_chunk_key(chunk, manifest.arrays[apath]):
                    continue
            out.append(f"{where}: unknown file {rel!r}")
    return out


def _owning_array(rel_dir: str, manifest: StoreManifest) -> tuple[str, str] | None:
    """The manifest array whose chunk tree holds folder ``rel_dir``, and the key prefix."""
    if rel_dir in manifest.arrays:
        return rel_dir, ""
    located = manifest.locate(rel_dir)
    if located is not None:
        return located
    return None


def _is_chunk_key(key: str, entry: dict[str, Any]) -> bool:
    """Whether ``key`` (``c/0/1``) is a chunk of an array with the entry's shape and chunks."""
    parts = key.split("/")
    if parts[0] != "c":
        return False
    shape, chunks = entry.get("shape", []), entry.get("shards") or entry.get("chunks", [])
    idx = parts[1:]
    if len(idx) != len(shape) or len(chunks) != len(shape):
        return len(shape) == 0 and key == "c"
    for i, s, c in zip(idx, shape, chunks, strict=True):
        if not i.isdigit() or int(i) >= max(1, -(-int(s) // max(1, int(c)))):
            return False
    return True
