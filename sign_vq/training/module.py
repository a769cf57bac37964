"""The LightningModule: one shared step for training and validation around :class:`PoseFSQAutoencoder`."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch

from sign_vq.config import TrainConfig, as_dict
from sign_vq.evaluation.metrics import ReconstructionMetrics
from sign_vq.evaluation.names import VALIDATION
from sign_vq.model.loss import part_weighted_mse
from sign_vq.model.network import PoseFSQAutoencoder


class PoseVQModule(L.LightningModule):
    """Trains the autoencoder; ``config`` is the typed `train` section (saved as a plain dict in every checkpoint)."""

    def __init__(self, config: TrainConfig, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        self.hparams.update(config=as_dict(config))  # plain values: in every checkpoint, loadable with weights_only
        self.config = config
        self.model = PoseFSQAutoencoder(config.model, config.max_frames, mean, std)
        self.val_metrics = ReconstructionMetrics(self.model.codebook_size, self.model.bits_per_frame)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        poses, padding = batch["poses"], batch["padding"]
        observed = batch["observed"] & ~padding[..., None]
        recon, codes = self.model(poses, observed, padding)
        loss_config = self.config.loss
        weights = loss_config.part_weights
        scales = self.model.part_scales() if loss_config.relative_parts else None
        loss = part_weighted_mse(recon, poses, observed, weights, scales)
        if loss_config.velocity_weight > 0:
            both = observed[:, 1:] & observed[:, :-1]
            velocity = part_weighted_mse(recon[:, 1:] - recon[:, :-1], poses[:, 1:] - poses[:, :-1], both, weights, scales)
            loss = loss + loss_config.velocity_weight * velocity
        return loss, recon, codes

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # randomness (dropout) as a function of the step and rank: a resumed run continues like an uninterrupted one
        torch.manual_seed((self.config.seed * 1_000_003 + self.global_step) * 1_009 + self.global_rank)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch)
        size = batch["poses"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self.val_loss = torch.zeros(2, dtype=torch.float64)  # sum of batch losses, batches with something observed

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, recon, codes = self._step(batch)
        observed = batch["observed"] & ~batch["padding"][..., None]
        if observed.any():
            self.val_loss += torch.tensor([float(loss), 1.0], dtype=torch.float64)
        # frames with nothing observed (incl. a rank's padding windows) count for no code and no error
        self.val_metrics.update(recon, batch["poses"], observed, codes, ~observed.any(-1))

    def _sum_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value.to(self.device), reduce_op="sum").to(value.device, value.dtype)

    def on_validation_epoch_end(self) -> None:
        """Metrics of the whole validation split: every rank's sums added, then the same values logged on every rank."""
        self.val_metrics.reduce(self._sum_over_ranks)
        loss_sum, batches = self._sum_over_ranks(self.val_loss).tolist()
        metrics = self.val_metrics.compute()
        self.log("val/loss", loss_sum / max(batches, 1.0), prog_bar=True)
        for key in VALIDATION:
            self.log(f"val/{key}", metrics[key])

    def configure_optimizers(self):
        config = self.config
        optimizer = torch.optim.AdamW(self.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        warmup, total = config.warmup_steps, config.max_steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
