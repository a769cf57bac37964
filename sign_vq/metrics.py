"""Reconstruction and codebook metrics, each next to a trivial reference so numbers have context.

Units: errors are mean per-point L2 distances (x, y, z) in shoulder widths. Normalization is a translation and one
scale per pose (its mean shoulder width), so this equals the error in the pose's original coordinates divided by its
shoulder width. Only observed (unmasked, unpadded) points count. The trivial reference predicts every frame of a
pose as that pose's own per-point mean over its frames.
"""

from __future__ import annotations

import math

import torch

from sign_vq import skeleton

FLOAT16_BITS_PER_FRAME = skeleton.NUM_POINTS * skeleton.DIMS * 16


def masked_mse(recon: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Mean squared error over observed values (observed: ... x 178, broadcast over x,y,z)."""
    values = observed[..., None].expand_as(target)
    return (recon.float() - target.float())[values].square().mean()


def trivial_reference(poses: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Every frame predicted as the pose's own per-point mean over its observed frames (B x T x 178 x 3)."""
    weight = observed[..., None].to(poses.dtype)
    mean = (poses * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1)
    return mean.expand_as(poses)


def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """Utilization (fraction of codes used) and perplexity of a code histogram."""
    total = counts.sum()
    if total == 0:
        return {"codebook_utilization": 0.0, "perplexity": 0.0}
    probs = counts.double() / total
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    return {"codebook_utilization": float((counts > 0).double().mean()), "perplexity": float(entropy.exp())}


class ReconstructionMetrics:
    """Accumulates per-part errors (model and trivial reference) and the code histogram over many batches."""

    def __init__(self, codebook_size: int, bits_per_frame: float):
        self.codebook_size = codebook_size
        self.bits_per_frame = bits_per_frame
        self.reset()

    def reset(self) -> None:
        parts = len(skeleton.PARTS)
        self.error = torch.zeros(parts, dtype=torch.float64)
        self.reference = torch.zeros(parts, dtype=torch.float64)
        self.count = torch.zeros(parts, dtype=torch.float64)
        self.squared = torch.zeros((), dtype=torch.float64)
        self.values = 0
        self.frames = 0
        self.codes = torch.zeros(self.codebook_size, dtype=torch.int64)

    @torch.no_grad()
    def update(
        self,
        recon: torch.Tensor,
        target: torch.Tensor,
        observed: torch.Tensor,
        codes: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: B x T x 178 x 3 poses, B x T x 178 observed, B x T x K codes, B x T padding."""
        recon, target = recon.detach().double().cpu(), target.detach().double().cpu()
        observed = observed.detach().cpu()
        valid = torch.ones(target.shape[:2], dtype=torch.bool) if padding is None else ~padding.cpu()
        observed = observed & valid[..., None]
        distance = (recon - target).norm(dim=-1)
        reference = (trivial_reference(target, observed) - target).norm(dim=-1)
        for i, points in enumerate(skeleton.PARTS.values()):
            seen = observed[..., points]
            self.error[i] += distance[..., points][seen].sum()
            self.reference[i] += reference[..., points][seen].sum()
            self.count[i] += seen.sum()
        mask = observed[..., None].expand_as(target)
        self.squared += (recon - target)[mask].square().sum()
        self.values += int(mask.sum())
        self.frames += int(valid.sum())
        if codes is not None:
            frame_codes = codes.detach().cpu()[valid].reshape(-1)
            self.codes += torch.bincount(frame_codes, minlength=self.codebook_size)[: self.codebook_size]

    def compute(self) -> dict[str, float]:
        """Per-part error and reference, their ratio, MSE, codebook use, bits per frame and compression."""
        result: dict[str, float] = {"mse": float(self.squared / max(self.values, 1)), "frames": float(self.frames)}
        for i, name in enumerate(skeleton.PARTS):
            count = max(float(self.count[i]), 1.0)
            error, reference = float(self.error[i]) / count, float(self.reference[i]) / count
            result[f"error_{name}"] = error
            result[f"reference_{name}"] = reference
            result[f"ratio_{name}"] = error / reference if reference > 0 else math.nan
        result.update(codebook_stats(self.codes))
        result["bits_per_frame"] = self.bits_per_frame
        result["compression_ratio"] = FLOAT16_BITS_PER_FRAME / self.bits_per_frame
        return result
