"""Run the ``cellbench`` CLI under torchrun with the toy baselines, recording per-rank facts.

Used by ``test_distributed.py``: each rank writes ``rank-<RANK>.json`` into ``$DDP_MARKERS``
with the sample keys its sampler produced, the digest of its final weights and the world size
its process group had.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

import tests.training.toy_models  # noqa: F401  (registers the toy baselines)
from cellbench.training import engine
from cellbench.training.data import sampling

facts: dict = {"rank": int(os.environ.get("RANK", "-1")), "keys": []}

_iter = sampling.EpochSampler.__iter__


def _recording_iter(self):
    keys = list(_iter(self))
    facts["keys"].append([list(k) for k in keys])
    return iter(keys)


sampling.EpochSampler.__iter__ = _recording_iter
_run = engine.Trainer._run


def _recording_run(self, *args):
    result = _run(self, *args)
    h = hashlib.sha256()
    for _, v in sorted(self.model.state_dict().items()):
        h.update(v.detach().cpu().numpy().tobytes())
    facts["weights"] = h.hexdigest()
    facts["world"] = dist.get_world_size() if dist.is_initialized() else 1
    facts["backend"] = dist.get_backend() if dist.is_initialized() else None
    facts["history"] = result.history
    return result


engine.Trainer._run = _recording_run

if __name__ == "__main__":
    from cellbench.cli import main

    try:
        main()
    finally:
        torch.set_num_threads(1)
        out = Path(os.environ["DDP_MARKERS"])
        (out / f"rank-{facts['rank']}.json").write_text(json.dumps(facts))
