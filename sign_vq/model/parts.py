"""Per-part quantization (``train.model.quantizer: parts``): the hands, the face and the body each with their own FSQ
codebook and share of the bits (``train.model.part_levels``), each part's code encoded from that part's points."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from vector_quantize_pytorch import FSQ

from sign_vq.poses import skeleton

# The parts of a `parts` quantizer in the latent's (and a frame's codes') order. The body comes last: the last
# static_dims of its code dimensions carry the static channel, as the last ones of the product's do.
PART_GROUPS: dict[str, slice] = {
    "hands": slice(skeleton.PARTS["left_hand"].start, skeleton.PARTS["right_hand"].stop),
    "face": skeleton.PARTS["face"],
    "body": skeleton.PARTS["body"],
}


class PartQuantizer(nn.Module):
    """One FSQ codebook per part (``part_levels``: part -> levels, in the latent's order), each rounding its own
    slice of the latent: a frame has one code per part, and bits = the sum of the parts' log2(prod(levels)).

    Part i's codes are offset by the sizes of the codebooks before it: the codes of all parts together are
    0..codebook_size-1, and a code alone names its part."""

    def __init__(self, part_levels: dict[str, list[int]]):
        super().__init__()
        self.dims = [len(levels) for levels in part_levels.values()]
        self.sizes = [math.prod(levels) for levels in part_levels.values()]
        self.offsets = list(itertools.accumulate([0, *self.sizes[:-1]]))
        self.codebook_size = sum(self.sizes)
        self.bits = sum(math.log2(size) for size in self.sizes)
        self.codebooks = nn.ModuleList(FSQ(list(levels)) for levels in part_levels.values())

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantized latents (B x T x sum of dims) and codes (B x T x parts, int64, offset per part)."""
        quantized = [codebook.quantize(chunk) for codebook, chunk in zip(self.codebooks, latent.split(self.dims, -1))]
        codes = [codebook.codes_to_indices(out).long() + offset
                 for codebook, out, offset in zip(self.codebooks, quantized, self.offsets)]
        return torch.cat(quantized, -1), torch.stack(codes, -1)

    def in_range(self, codes: torch.Tensor) -> bool:
        """Whether each part's code (B x T x parts) lies in that part's range."""
        low = torch.tensor(self.offsets, device=codes.device)
        return bool(((codes >= low) & (codes < low + torch.tensor(self.sizes, device=codes.device))).all())

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B x T x sum of dims) of codes (B x T x parts)."""
        return torch.cat([cb.indices_to_codes(codes[..., i] - offset).float()
                          for i, (cb, offset) in enumerate(zip(self.codebooks, self.offsets))], -1)


class PartStreams(nn.Module):
    """The encoder's input under a :class:`PartQuantizer`: one token stream per part, each embedded from its own
    points only (standardized values and observed flags), so that the shared encoder gives a part's code nothing
    but its own points to see; ``own_dims`` keeps each stream's own motion dimensions of the projected output."""

    def __init__(self, parts: list[slice], motion_dims: list[int], d_model: int):
        super().__init__()
        self.parts, self.motion_dims = parts, motion_dims
        self.embeds = nn.ModuleList(nn.Linear((s.stop - s.start) * (skeleton.DIMS + 1), d_model) for s in parts)

    def forward(self, standardized: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """Tokens (parts*B x T x d_model) of standardized values (B x T x 534) and observed flags (B x T x 178)."""
        dims = skeleton.DIMS
        return torch.cat([embed(torch.cat([standardized[..., s.start * dims: s.stop * dims], flags[..., s]], -1))
                          for embed, s in zip(self.embeds, self.parts)])

    def own_dims(self, projected: torch.Tensor) -> torch.Tensor:
        """Each stream's own dimensions (parts*B x T x motion dims -> B x T x motion dims), in part order."""
        bounds = list(itertools.accumulate([0, *self.motion_dims]))
        return torch.cat([out[..., start:stop] for out, start, stop in
                          zip(projected.chunk(len(self.parts)), bounds, bounds[1:])], -1)
