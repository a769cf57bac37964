"""Quantizers beyond the library's FSQ: a residual FSQ whose first k stages decode on their own."""

from __future__ import annotations

import torch
from torch import nn
from vector_quantize_pytorch import FSQ


class ResidualQuantizer(nn.Module):
    """Residual FSQ over a latent of ``dim`` values per frame: quantizer i projects what quantizers 0..i-1 left of the
    latent to len(levels) values, rounds them with FSQ and projects them back (the library's FSQ with ``dim``, its own
    projections per quantizer as in DAC's residual VQ), so a frame's first k codes decode on their own (their sum).

    vector_quantize_pytorch's ResidualFSQ rounds the same len(levels) values at every stage: its latent would have
    len(levels) values at any bit rate, no more than one codebook's. With probability ``dropout`` a training batch
    keeps only its first j quantizers, j uniform in 1..num_quantizers (MoMask's quantizer dropout)."""

    def __init__(self, levels: list[int], num_quantizers: int, dim: int, dropout: float):
        super().__init__()
        self.stages = nn.ModuleList(FSQ(list(levels), dim=dim) for _ in range(num_quantizers))
        self.dropout = dropout

    def _stages_used(self) -> int:
        """All quantizers, or in training with probability ``dropout`` the first j (j uniform, from torch's seed)."""
        if self.training and torch.is_grad_enabled() and self.dropout > 0 and float(torch.rand(())) < self.dropout:
            return int(torch.randint(1, len(self.stages) + 1, ()))
        return len(self.stages)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantized latents (B x T x dim) and codes (B x T x num_quantizers, int64; -1 after a dropout's j).

        A dropped quantizer still runs, its output times 0: every parameter stays in the graph, as DDP requires."""
        used = self._stages_used()
        residual, quantized, codes = latent, torch.zeros_like(latent), []
        for i, stage in enumerate(self.stages):
            out, index = stage(residual)
            residual = residual - out.detach()
            quantized = quantized + (out if i < used else out * 0.0)
            codes.append(index.long() if i < used else torch.full_like(index, -1, dtype=torch.long))
        return quantized, torch.stack(codes, -1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B x T x dim) of a frame's first k codes (B x T x k)."""
        return sum(stage.indices_to_codes(codes[..., i]) for i, stage in enumerate(self.stages[: codes.shape[-1]]))
