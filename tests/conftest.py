"""Shared fixtures: every test gets its own cellbench cache and never touches the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# huggingface_hub and datasets read these when first imported, before any fixture runs.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cellbench_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Redirect ``CELLBENCH_HOME`` to a fresh temp dir and force offline mode by default."""
    home = tmp_path_factory.mktemp("cellbench_home")
    monkeypatch.setenv("CELLBENCH_HOME", str(home))
    monkeypatch.setenv("CELLBENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return home


@pytest.fixture(autouse=True)
def _validate_every_built_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check every format 2 store a test builds with independent OME-Zarr 0.5 validators.

    Wraps :meth:`StoreWriter.close` (the one place every store is finished: ``build_store``,
    ``pull``, Hugging Face import, upgrades), so no test can build an invalid store unnoticed.
    """
    from cellbench.store.zarr_store import StoreWriter
    from tests.ome_validation import validate_store_ome

    original = StoreWriter.close

    def close(self: StoreWriter):  # type: ignore[no-untyped-def]
        manifest = original(self)
        if self.fmt.ome_dimension_names:
            validate_store_ome(self.path)
        return manifest

    monkeypatch.setattr(StoreWriter, "close", close)


@pytest.fixture(scope="module")
def cluster():
    """A real ``dask.distributed.LocalCluster``: two worker processes on loopback (per module)."""
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    ) as c:
        yield c


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running ``python -m cellbench`` in a subprocess from a source checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture
def cli_cmd() -> list[str]:
    """Command prefix that runs the cellbench CLI with the current interpreter."""
    return [sys.executable, "-m", "cellbench"]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto) on 127.0.0.1, shared by the session."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    from tests.store.fetch_helpers import S3Endpoint

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    yield S3Endpoint(url, client)
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the moto server, which the environment names as the S3 endpoint."""
    import uuid

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_endpoint.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_endpoint.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3_endpoint.client.create_bucket(Bucket=bucket)
    return bucket
