"""Reconstruction and codebook metrics, each next to a trivial reference so numbers have context.

Units: errors are mean per-point L2 distances (x, y, z) in shoulder widths. Normalization is a translation and one
scale per pose (its mean shoulder width), so this equals the error in the pose's original coordinates divided by its
shoulder width. Only observed (unmasked, unpadded) points count. The trivial reference predicts every frame of a
pose as that pose's own per-point mean over its frames (over each batch item: a whole pose in `render`, a window of
``max_frames`` in training validation).

- ``error_<part>`` = sum over observed points of ||recon - target||_2 / their count, per part (body, face, hands);
  ``reference_<part>`` the same for the trivial reference; ``ratio_<part>`` = error / reference (< 1 beats it).
  With ``scale`` (each pose's shoulder width in pixels) ``error_px_<part>``/``reference_px_<part>`` are in pixels.
- ``mse`` = mean over observed values (x, y, z separately) of (recon - target)^2, shoulder widths^2;
  ``reference_mse``/``ratio_mse`` likewise.
- ``jitter`` = mean ||recon[t+1] - 2 recon[t] + recon[t-1]||_2 over points observed in the three frames (shoulder
  widths per frame^2); ``jitter_target`` the same for the original; ``ratio_jitter`` = jitter / jitter_target.
- ``codebook_utilization`` = fraction of the ``codebook_size`` codes used at least once (all codebooks pooled);
  ``perplexity`` = exp(entropy) of the code histogram (at most ``codebook_size``).
- ``bits_per_frame`` = num_codebooks * log2(codebook_size); ``compression_ratio`` = float16 bits of a frame
  (178 x 3 x 16) / bits_per_frame.
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


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else math.nan


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
        self.reference_squared = torch.zeros((), dtype=torch.float64)
        self.jitter = torch.zeros(2, dtype=torch.float64)  # reconstruction, target
        self.jitter_count = 0
        self.pixel_error = torch.zeros(parts, dtype=torch.float64)
        self.pixel_reference = torch.zeros(parts, dtype=torch.float64)
        self.pixel_count = torch.zeros(parts, dtype=torch.float64)

    @torch.no_grad()
    def update(
        self,
        recon: torch.Tensor,
        target: torch.Tensor,
        observed: torch.Tensor,
        codes: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: B x T x 178 x 3 poses, B x T x 178 observed, B x T x K codes, B x T padding.

        ``scale`` (B, optional): each pose's shoulder width in pixels, for the ``error_px_*`` metrics.
        """
        recon, target = recon.detach().double().cpu(), target.detach().double().cpu()
        observed = observed.detach().cpu()
        valid = torch.ones(target.shape[:2], dtype=torch.bool) if padding is None else ~padding.cpu()
        observed = observed & valid[..., None]
        trivial = trivial_reference(target, observed)
        distance = (recon - target).norm(dim=-1)
        reference = (trivial - target).norm(dim=-1)
        pixels = None if scale is None else torch.as_tensor(scale, dtype=torch.float64).cpu().reshape(-1, 1, 1)
        for i, points in enumerate(skeleton.PARTS.values()):
            seen = observed[..., points]
            self.error[i] += distance[..., points][seen].sum()
            self.reference[i] += reference[..., points][seen].sum()
            self.count[i] += seen.sum()
            if pixels is not None:
                self.pixel_error[i] += (distance[..., points] * pixels)[seen].sum()
                self.pixel_reference[i] += (reference[..., points] * pixels)[seen].sum()
                self.pixel_count[i] += seen.sum()
        mask = observed[..., None].expand_as(target)
        self.squared += (recon - target)[mask].square().sum()
        self.reference_squared += (trivial - target)[mask].square().sum()
        if target.shape[1] >= 3:
            seen3 = observed[:, 2:] & observed[:, 1:-1] & observed[:, :-2]
            for j, poses in enumerate((recon, target)):
                accel = (poses[:, 2:] - 2 * poses[:, 1:-1] + poses[:, :-2]).norm(dim=-1)
                self.jitter[j] += accel[seen3].sum()
            self.jitter_count += int(seen3.sum())
        self.values += int(mask.sum())
        self.frames += int(valid.sum())
        if codes is not None:
            frame_codes = codes.detach().cpu()[valid].reshape(-1)
            self.codes += torch.bincount(frame_codes, minlength=self.codebook_size)[: self.codebook_size]

    def compute(self) -> dict[str, float]:
        """Per-part error and reference, their ratio, MSE, codebook use, bits per frame and compression."""
        result: dict[str, float] = {"mse": float(self.squared / max(self.values, 1)), "frames": float(self.frames)}
        result["reference_mse"] = float(self.reference_squared / max(self.values, 1))
        result["ratio_mse"] = _ratio(result["mse"], result["reference_mse"])
        for i, name in enumerate(skeleton.PARTS):
            count = max(float(self.count[i]), 1.0)
            error, reference = float(self.error[i]) / count, float(self.reference[i]) / count
            result[f"error_{name}"] = error
            result[f"reference_{name}"] = reference
            result[f"ratio_{name}"] = error / reference if reference > 0 else math.nan
            if self.pixel_count[i] > 0:
                result[f"error_px_{name}"] = float(self.pixel_error[i] / self.pixel_count[i])
                result[f"reference_px_{name}"] = float(self.pixel_reference[i] / self.pixel_count[i])
        jitter_count = max(self.jitter_count, 1)
        result["jitter"] = float(self.jitter[0]) / jitter_count
        result["jitter_target"] = float(self.jitter[1]) / jitter_count
        result["ratio_jitter"] = _ratio(result["jitter"], result["jitter_target"])
        result.update(codebook_stats(self.codes))
        result["bits_per_frame"] = self.bits_per_frame
        result["compression_ratio"] = FLOAT16_BITS_PER_FRAME / self.bits_per_frame
        return result


def metrics_table(result: dict[str, float], codebook_size: int) -> list[dict[str, float | str]]:
    """Flat rows ``{metric, model, reference, ratio}`` of a :meth:`ReconstructionMetrics.compute` result.

    References: the trivial reference for errors and MSE, the original pose for jitter, every code used
    (utilization 1, perplexity ``codebook_size``) for the codebook, float16 poses for bits per frame.
    """
    rows = [("mse", result["mse"], result["reference_mse"])]
    rows += [(f"error_{name}", result[f"error_{name}"], result[f"reference_{name}"]) for name in skeleton.PARTS]
    rows += [
        (f"error_px_{name}", result[f"error_px_{name}"], result[f"reference_px_{name}"])
        for name in skeleton.PARTS
        if f"error_px_{name}" in result
    ]
    rows += [
        ("jitter", result["jitter"], result["jitter_target"]),
        ("codebook_utilization", result["codebook_utilization"], 1.0),
        ("perplexity", result["perplexity"], float(codebook_size)),
        ("bits_per_frame", result["bits_per_frame"], float(FLOAT16_BITS_PER_FRAME)),
    ]
    return [
        {"metric": metric, "model": float(model), "reference": float(reference), "ratio": _ratio(model, reference)}
        for metric, model, reference in rows
    ]
