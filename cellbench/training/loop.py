"""The epoch loop's work: one training epoch, the validation loss, validation predictions.

:class:`EpochLoop` trains on batches from the Zarr loaders (augmented on the device,
autocast on CUDA), computes the validation loss on deterministic batches, and predicts the
validation split (sharded over ranks, with :func:`~cellbench.training.inference.predict_split`)
and scores it with the task's metrics (``cellbench.scoring.score``). Every number that decides
anything is all-reduced or broadcast, so all ranks agree.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from cellbench.errors import CellbenchError, one_line
from cellbench.progress import STEP_THRESHOLD_S as STEP_S
from cellbench.progress import activity
from cellbench.training import distributed as dist
from cellbench.training.components import Components
from cellbench.training.config import TrainConfig
from cellbench.training.errors import TrainingError
from cellbench.training.inference import predict_split


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of an epoch's augmentation on a rank: ``SeedSequence([seed, rank, epoch])``."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1)


class EpochLoop:
    """Trains and validates a run's model, one epoch at a time.

    Args:
        config: The run's config.
        parts: The run's components.
        dist_info: The process group.
        device: The training device.
        progress: Show a progress bar (rank 0, on a terminal).

    Attributes:
        step_losses: Training loss of every optimiser step run so far (this rank).
    """

    def __init__(
        self,
        config: TrainConfig,
        parts: Components,
        dist_info: dist.DistInfo,
        device: torch.device,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.parts = parts
        self.dist_info = dist_info
        self.device = device
        self.progress = progress
        self.step_losses: list[float] = []
        self.amp = parts.precision in ("bf16", "fp16")
        self.amp_dtype = torch.bfloat16 if parts.precision == "bf16" else torch.float16

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (0-based); its metrics record (loss all-reduced over ranks)."""
        from tqdm.auto import tqdm

        cfg, parts = self.config, self.parts
        model, optimizer, scaler = parts.model, parts.optimizer, parts.scaler
        model.train()
        parts.source.set_epoch(epoch)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(epoch_seed(cfg.seed, self.dist_info.rank, epoch))
        fmt = None
        if cfg.channels_last:
            fmt = torch.channels_last if parts.spec.ndim == 2 else torch.channels_last_3d
        losses: list[torch.Tensor] = []
        components: dict[str, float] = {}
        n_images = 0
        lr = optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        shown = self.progress and self.dist_info.is_main
        try:
            batches = iter(parts.source)
            first: Any = None
            if parts.steps_per_epoch:
                # starting workers and decoding the first batch can take a while (shown before
                # the step bar, so the two never share a terminal line)
                with activity(f"first batch of epoch {epoch + 1}", shown, after_s=STEP_S):
                    first = next(batches, None)
        except CellbenchError as err:
            raise one_line(err) from None
        chained = batches if first is None else itertools.chain([first], batches)
        bar = tqdm(
            total=parts.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            leave=False,
            # None: tqdm switches itself off when stderr is not a terminal (logs, CI)
            disable=None if shown else True,
        )
        try:
            for step, batch in enumerate(chained):
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                batch = parts.augmenter(batch, gen)
                if fmt is not None:
                    batch["image"] = batch["image"].contiguous(memory_format=fmt)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    loss, named = parts.forward(batch)
                if not bool(torch.isfinite(loss.detach())):
                    raise TrainingError(
                        f"loss is {float(loss)} at epoch {epoch + 1} step {step + 1}; lower the "
                        f"learning rate (lr={cfg.lr}) or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                parts.scheduler.step()
                losses.append(loss.detach().float())
                for k, v in named.items():
                    components[k] = components.get(k, 0.0) + float(v)
                n_images += int(batch["image"].shape[0])
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{float(losses[-1]):.4g}")
        except CellbenchError as err:
            raise one_line(err) from None
        finally:
            bar.close()
        elapsed = time.perf_counter() - start
        step_losses = torch.stack(losses).cpu().tolist() if losses else []
        self.step_losses.extend(step_losses)
        total, count, imgs = dist.all_reduce_sum(
            [float(sum(step_losses)), float(len(step_losses)), float(n_images)], self.device
        )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * parts.steps_per_epoch,
            "lr": lr,
            "train_loss": total / max(count, 1),
        }
        for k, v in components.items():
            record[f"train/{k}"] = v / max(len(step_losses), 1)
        record["images_per_s"] = imgs / max(elapsed, 1e-9)
        record["epoch_time_s"] = elapsed
        return record

    def val_loss(self) -> float | None:
        """Mean loss over the validation batches (all ranks), or None without them."""
        parts = self.parts
        if parts.val_source is None:
            return None
        parts.model.eval()
        total, count = 0.0, 0.0
        with torch.no_grad():
            try:
                for batch in parts.val_source:
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                        loss, _ = parts.model.loss(batch)
                    n = int(batch["image"].shape[0])
                    total += float(loss) * n
                    count += n
            except CellbenchError as err:
                raise one_line(err) from None
        total, count = dist.all_reduce_sum([total, count], self.device)
        return total / count if count else None

    def val_predict(self, scored: bool) -> tuple[dict[str, Any], Any]:
        """Predict the validation split (sharded over ranks) and, if ``scored``, score it.

        Returns:
            The metric record (every rank) and the gathered predictions (rank 0, else None).
        """
        from cellbench.predictions import PredictionSet

        parts = self.parts
        store = parts.store
        ids = store.sample_ids("val")[self.dist_info.rank :: self.dist_info.world]
        preds = predict_split(parts.package, store, "val", device=self.device, sample_ids=ids)
        gathered = dist.gather_objects(list(preds))
        record: dict[str, Any] = {}
        pset = None
        if self.dist_info.is_main:
            assert gathered is not None
            allp = [p for part in gathered for p in part]
            pset = PredictionSet.from_predictions(
                self.config.task,
                allp,
                dataset=store.id,
                dataset_version=store.version,
                split="val",
            )
            if scored:
                from cellbench.scoring import score

                report = score(self.config.task, store, "val", pset, n_bootstrap=0)
                for k, v in report.metrics.items():
                    record[f"val/{k}"] = v
                record[f"val/{report.headline.name}"] = report.headline.value
        record = dist.broadcast_object(record)
        return record, pset


__all__ = ["EpochLoop", "epoch_seed"]
