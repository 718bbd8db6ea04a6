"""Killing a ``dask.distributed`` worker mid-run, for the tests that results survive it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import distributed


class _KillFirstWorkerOnce(distributed.WorkerPlugin):
    """Make the first worker that starts a task named ``task`` die on the spot (os._exit), once."""

    def __init__(self, marker: str, task: str) -> None:
        self.marker = marker
        self.task = task

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or self.task not in str(key):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        os._exit(1)


@contextmanager
def one_worker_killed(cluster: distributed.LocalCluster, marker: Path, task: str) -> Iterator[None]:
    """Run the block with a worker killed as it starts the first ``task``; check it was replaced."""
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        before = set(client.scheduler_info()["workers"])
        client.register_plugin(_KillFirstWorkerOnce(str(marker), task), name="kill-once")
        try:
            yield
        finally:
            client.unregister_worker_plugin("kill-once")
        assert marker.exists()  # a worker really died while running a task
        client.wait_for_workers(2, timeout=60)
        after = set(client.scheduler_info()["workers"])
    assert before != after  # the nanny replaced the dead worker
