"""``cellbench datasets pull ID --public``: the public variant of a store, built or downloaded.

With ``--server URL`` the variant is downloaded from a challenge server (the archive's sha256
is checked against the one the server publishes, the archive is vetted like any upload, and
every array is verified against the store's manifest); without it, it is built from the
complete store in the cache (pulled first when the catalog knows the dataset), with the
hidden split's labels left out. Either way it lands in the cache at
:func:`cellbench.registry.public_store_path`, where ``load`` finds it when the complete store
is absent.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cellbench.errors import StoreError
from cellbench.store.zarr_store import DatasetStore


def _install(built: Path, ident: str, version: str, force: bool) -> DatasetStore:
    from cellbench.registry import public_store_path

    dest = public_store_path(ident, version)
    if dest.exists():
        if not force:
            raise StoreError(f"{dest}: a public variant is already cached (use --force)")
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(built), str(dest))
    return DatasetStore.open(dest)


def build_public(ref: str, hidden_split: str = "test", force: bool = False) -> DatasetStore:
    """Build the public variant of a dataset from its complete store (pulled if needed)."""
    from cellbench.catalog import Catalog, parse_ref
    from cellbench.registry import load, public_store_path, pull, resolve
    from cellbench.store.cache import tmp_dir
    from cellbench.store.variants import write_public_variant

    ident, _ = parse_ref(ref)
    if not force:
        resolved = resolve(ref)
        if public_store_path(*resolved).exists():
            raise StoreError(
                f"{public_store_path(*resolved)}: a public variant is already cached (use --force)"
            )
    store = pull(ref, progress=False) if ident in Catalog().ids() else load(ref)
    with tempfile.TemporaryDirectory(dir=tmp_dir()) as tmp:
        built = write_public_variant(store, hidden_split, Path(tmp) / "public.zarr")
        return _install(built.path, store.id, store.version, force)


def download_public(
    ref: str,
    server: str,
    challenge: str | None = None,
    token: str | None = None,
    force: bool = False,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[DatasetStore, dict[str, object]]:
    """Download a challenge's public store; return it and the challenge's published info.

    Raises:
        ServerError: If the server cannot be reached or the digest does not match.
        StoreError: If the unpacked store does not verify.
    """
    from cellbench.server.client import Client
    from cellbench.server.storage import ArchiveLimits, unpack
    from cellbench.store.cache import tmp_dir

    client = Client(server, token)
    try:
        info = client.pick_challenge(challenge, dataset=ref)
        with tempfile.TemporaryDirectory(dir=tmp_dir()) as tmp:
            archive = Path(tmp) / "public.tar"
            client.download_public_store(info, archive, on_bytes)
            limits = ArchiveLimits(max_total_bytes=1 << 40, max_members=10_000_000)
            root = unpack(archive, Path(tmp) / "unpacked", limits)
            store = DatasetStore.open(root)
            problems = store.verify()
            if problems:
                raise StoreError(f"downloaded public store does not verify: {problems[0]}")
            if f"{store.id}@{store.version}" != info["dataset"]:
                raise StoreError(
                    f"downloaded store is {store.id}@{store.version}, the challenge says "
                    f"{info['dataset']}"
                )
            installed = _install(root, store.id, store.version, force)
    finally:
        client.close()
    return installed, info
