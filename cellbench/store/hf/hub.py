"""Upload of a store to the Hugging Face Hub, with its dataset card and metadata JSON.

:func:`push_to_hub` uploads :func:`hub_files` (``README.md`` and ``cellbench.json``) first, then
the data with ``DatasetDict.push_to_hub``; failures of the Hub become :class:`HubError`.
"""

from __future__ import annotations

import json

from cellbench.errors import (
    CellbenchError,
    OfflineError,
)
from cellbench.store.cache import is_offline
from cellbench.store.hf.card import dataset_card
from cellbench.store.hf.export import to_hf
from cellbench.store.hf.layout import (
    METADATA_FILE,
    README_FILE,
)
from cellbench.store.hf.plan import ExportPlan
from cellbench.store.zarr_store import DatasetStore


class HubError(CellbenchError):
    """Talking to the Hugging Face Hub failed (network, authentication or permissions)."""


def hub_files(store: DatasetStore, repo_id: str | None = None) -> dict[str, bytes]:
    """Files uploaded next to the data: ``README.md``, the metadata JSON, ``croissant.json``."""
    from cellbench.croissant import CROISSANT_FILE, croissant

    plan = ExportPlan.from_store(store)
    return {
        README_FILE: dataset_card(plan.metadata, repo_id=repo_id).encode("utf-8"),
        METADATA_FILE: (json.dumps(plan.metadata, indent=1, sort_keys=True) + "\n").encode(),
        CROISSANT_FILE: (json.dumps(croissant(None, store), indent=1) + "\n").encode(),
    }


def push_to_hub(
    store: DatasetStore,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    max_shard_size: int | str | None = None,
    progress: bool = False,
    offline: bool | None = None,
) -> str:
    """Push a store to the Hugging Face Hub as a Parquet dataset with its card and metadata.

    Uploads ``README.md`` and ``cellbench.json`` first (so ``datasets`` merges its
    ``dataset_info``/``configs`` into this card), then ``DatasetDict.push_to_hub``.

    Args:
        store: The canonical store.
        repo_id: ``user/name`` or ``org/name``.
        token: Hub token (default: ``HF_TOKEN`` or the stored login).
        private: Create the repository as private.
        max_shard_size: Largest Parquet shard (default: ``datasets``' 500MB).
        progress: Show progress bars.
        offline: Refuse to touch the network (default: ``CELLBENCH_OFFLINE``).

    Returns:
        The dataset's URL.

    Raises:
        OfflineError: In offline mode.
        HubError: If the Hub refuses or cannot be reached.
    """
    if is_offline(offline):
        raise OfflineError(
            f"pushing {store.id}@{store.version} to the Hugging Face Hub needs the network, "
            "but offline mode is on (CELLBENCH_OFFLINE / --offline)"
        )
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    # HfHubHTTPError derives from the HTTP client's base error (httpx2, httpx or requests,
    # depending on the huggingface_hub version), whose subclasses are the connection errors.
    network_errors = tuple(
        c for c in HfHubHTTPError.__mro__ if c not in (Exception, BaseException, object)
    )
    files = hub_files(store, repo_id)
    ref = f"{store.id}@{store.version}"
    dd = to_hf(store, progress=progress)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.create_commit(
            repo_id=repo_id,
            repo_type="dataset",
            operations=[
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=data)
                for name, data in files.items()
            ],
            commit_message=f"cellbench: card and metadata of {ref}",
        )
        dd.push_to_hub(
            repo_id,
            token=token,
            private=private,
            max_shard_size=max_shard_size,
            commit_message=f"cellbench: data of {ref}",
        )
    except network_errors as err:
        raise HubError(f"pushing {ref} to {repo_id} failed: {err}") from err
    return f"https://huggingface.co/datasets/{repo_id}"
