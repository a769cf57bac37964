"""The LightningModule: one shared step for training and validation around :class:`PoseFSQAutoencoder`."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch

from sign_vq.metrics import ReconstructionMetrics
from sign_vq.model import PoseFSQAutoencoder, model_kwargs, part_weighted_mse


class PoseVQModule(L.LightningModule):
    """Trains the autoencoder; ``config`` is the validated `train` section (saved in every checkpoint)."""

    def __init__(self, config: dict, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        super().__init__()
        self.save_hyperparameters("config")
        self.config = config
        self.model = PoseFSQAutoencoder(mean, std, **model_kwargs(config))
        self.val_metrics = ReconstructionMetrics(self.model.codebook_size, self.model.bits_per_frame)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        poses, padding = batch["poses"], batch["padding"]
        observed = batch["observed"] & ~padding[..., None]
        recon, codes = self.model(poses, observed, padding)
        loss_config = self.config["loss"]
        weights = loss_config["part_weights"]
        scales = self.model.part_scales() if loss_config["relative_parts"] else None
        loss = part_weighted_mse(recon, poses, observed, weights, scales)
        if loss_config["velocity_weight"] > 0:
            both = observed[:, 1:] & observed[:, :-1]
            velocity = part_weighted_mse(recon[:, 1:] - recon[:, :-1], poses[:, 1:] - poses[:, :-1], both, weights, scales)
            loss = loss + loss_config["velocity_weight"] * velocity
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=poses.shape[0], sync_dist=stage == "val")
        return loss, recon, codes

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # randomness (dropout) as a function of the step: a resumed run continues exactly like an uninterrupted one
        torch.manual_seed(self.config["seed"] * 1_000_003 + self.global_step)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch, "train")
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch["poses"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        _, recon, codes = self._step(batch, "val")
        self.val_metrics.update(recon, batch["poses"], batch["observed"], codes, batch["padding"])

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        for key in ("codebook_utilization", "perplexity", "mse"):
            self.log(f"val/{key}", metrics[key], sync_dist=True)
        for name in ("body", "face", "left_hand", "right_hand"):
            self.log(f"val/error_{name}", metrics[f"error_{name}"], sync_dist=True)
            self.log(f"val/ratio_{name}", metrics[f"ratio_{name}"], sync_dist=True)

    def configure_optimizers(self):
        config = self.config
        optimizer = torch.optim.AdamW(self.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
        warmup, total = config["warmup_steps"], config["max_steps"]

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
