"""The FSQ pose autoencoder: transformer encoder -> FSQ codes per frame -> transformer decoder.

The quantizer is a product of FSQ codebooks (``fsq``: each code quantizes its own chunk of the latent), a residual
FSQ (``residual``, :class:`ResidualQuantizer`: each code quantizes what the codes before it left, so the first k of
them decode on their own), one FSQ codebook per body part (``parts``, :class:`PartQuantizer`: hands, face and body
each encoded from their own points, with their own levels), or none (the unquantized upper bound).

Poses enter and leave in shoulder-normalized units (frames x 178 x 3, as written by `normalize`). The dataset
mean/std are buffers of the model, so a checkpoint alone is enough for inference.
"""

from __future__ import annotations

import itertools
import math
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from vector_quantize_pytorch import FSQ

from sign_vq import hub, skeleton
from sign_vq.config import TrainConfig, as_dict, train_config
from sign_vq.errors import UserError

QUANTIZERS = ("fsq", "residual", "parts", "none")
STD_FLOOR = 0.01  # shoulder widths: keeps near-constant coordinates (MediaPipe z) from being blown up
# Standard deviations: the encoder sees a value at most this far from the dataset mean. 1 in ~6,000 values of the
# quality benchmark's training poses lies beyond it; a tracking glitch far beyond it (a hand 5 shoulder widths off)
# would otherwise swamp the whole window's codes and spoil every part of it.
INPUT_LIMIT = 5.0
FEATURES = skeleton.NUM_POINTS * skeleton.DIMS
# The parts of a `parts` quantizer in the latent's (and a frame's codes') order. The body comes last: the last
# static_dims of its code dimensions carry the static channel, as the last ones of the product's do.
PART_GROUPS: dict[str, slice] = {
    "hands": slice(skeleton.PARTS["left_hand"].start, skeleton.PARTS["right_hand"].stop),
    "face": skeleton.PARTS["face"],
    "body": skeleton.PARTS["body"],
}
PART_LEVELS = {"hands": [5], "face": [4], "body": [3, 4, 4]}  # 9.9 bits a frame (the schema's default)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal encoding indexed by time step: (length, dim), the same for every batch item."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


def _transformer(d_model: int, heads: int, layers: int, ff_mult: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model, heads, d_model * ff_mult, dropout, batch_first=True, norm_first=True, activation="gelu"
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


def _no_padding(batch: torch.Tensor) -> torch.Tensor:
    """A B x T padding mask with no padded frame, for a batch shaped B x T x ..."""
    return torch.zeros(batch.shape[:2], dtype=torch.bool, device=batch.device)


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


class PoseFSQAutoencoder(nn.Module):
    """Encode poses into ``num_codebooks`` FSQ codes per frame and decode codes back into poses.

    With ``static_dims`` > 0, the last ``static_dims`` code dimensions of every frame carry the window's static shape
    (its mean pose: signer build, rest position) through a linear channel: frame t sends its own linear projections
    of the mean, the decoder sums frame t's learned read-outs over the window's frames. A linear channel generalizes
    to unseen signers like a principal-component code does, where the transformer alone learns the training signers'
    shapes by heart. Frames beyond ``max_frames`` send nothing on it.

    ``quantizer="none"`` is the same network with the rounding left out (its latents stay in FSQ's bounded range but
    continuous): the upper bound of what the network reaches, so the gap to it is what quantization costs. It has no
    codes: ``forward`` returns B x T x 0 codes, and ``encode``/``decode`` refuse.

    ``quantizer="residual"`` (:class:`ResidualQuantizer`) has ``num_quantizers`` codes per frame; ``forward`` and
    ``encode`` keep the first ``quantizers`` of them when asked, and ``decode`` takes any first k.

    ``quantizer="parts"`` (:class:`PartQuantizer`, :class:`PartStreams`) has one code per part of
    :data:`PART_GROUPS` (hands, face, body), each of its own ``part_levels``; the encoder (its weights shared) runs
    once per part on that part's points, the decoder reads all codes. The static channel, when on, sends the whole
    window's mean pose through the body's last ``static_dims`` dimensions.
    """

    def __init__(
        self,
        mean: np.ndarray | torch.Tensor | None = None,
        std: np.ndarray | torch.Tensor | None = None,
        *,
        d_model: int = 128,
        heads: int = 4,
        encoder_layers: int = 2,
        decoder_layers: int = 2,
        ff_mult: int = 4,
        dropout: float = 0.0,
        levels: list[int] = (8, 5, 5, 5),
        num_codebooks: int = 1,
        quantizer: str = "fsq",
        num_quantizers: int = 4,
        quantize_dropout: float = 0.5,
        static_dims: int = 0,
        max_frames: int = 128,
        part_levels: dict[str, list[int]] | None = None,
    ):
        super().__init__()
        shape = (skeleton.NUM_POINTS, skeleton.DIMS)
        mean = torch.zeros(shape) if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.ones(shape) if std is None else torch.as_tensor(np.asarray(std), dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(shape).clone())
        self.register_buffer("std", std.reshape(shape).clamp_min(STD_FLOOR))
        self.levels = list(levels)
        self.num_codebooks = num_codebooks
        self.max_frames = max_frames  # the window length it was trained on (inference cuts longer poses)
        if quantizer not in QUANTIZERS:
            raise UserError(f"model.quantizer {quantizer!r}: use one of {', '.join(QUANTIZERS)}")
        if quantizer in ("residual", "parts") and num_codebooks != 1:
            raise UserError(f"model.num_codebooks {num_codebooks}: must be 1 with model.quantizer: {quantizer}")
        part_levels = {name: list((part_levels or PART_LEVELS)[name]) for name in PART_GROUPS}
        self.part_levels = part_levels if quantizer == "parts" else None  # part -> levels, the latent's order
        if quantizer == "parts" and not static_dims < len(part_levels["body"]):
            raise UserError(f"model.static_dims {static_dims}: must be below len(model.part_levels.body) "
                            f"({len(part_levels['body'])}) with model.quantizer: parts")
        # a residual latent is as wide as num_quantizers codebooks: the same size as the product at the same bits
        code_dims = (num_quantizers if quantizer == "residual" else num_codebooks) * len(self.levels)
        if quantizer == "parts":
            code_dims = sum(map(len, part_levels.values()))
        self.codebook_size = int(np.prod(self.levels)) if quantizer != "none" else 0
        # codes a frame carries: one per codebook, one per residual quantizer (the first k of them decode alone), or
        # one per part
        self.codes_per_frame = {"fsq": num_codebooks, "residual": num_quantizers, "parts": len(PART_GROUPS),
                                "none": 0}[quantizer]
        self.latent_bits = 32 * code_dims if quantizer == "none" else 0  # float32 latents
        if not 0 <= static_dims < code_dims:
            raise UserError(
                f"model.static_dims {static_dims}: must be at least 0 and below the {code_dims} code dimensions "
                "(codebooks or residual quantizers x len(levels)); the rest carry the motion"
            )
        self.static_dims = static_dims
        # input per frame: standardized values (0 where missing) and the observed flag of each point; under parts one
        # stream per part, each with its own motion dimensions (the body's last static_dims are the static channel's)
        motion = [len(levels) - static_dims * (name == "body") for name, levels in part_levels.items()]
        self.embed = (PartStreams(list(PART_GROUPS.values()), motion, d_model) if quantizer == "parts"
                      else nn.Linear(FEATURES + skeleton.NUM_POINTS, d_model))
        self.encoder = _transformer(d_model, heads, encoder_layers, ff_mult, dropout)
        self.to_codes = nn.Linear(d_model, code_dims - static_dims)
        # projections are ours (to_codes/from_codes): FSQ's input is the code dimensions themselves (a residual
        # quantizer adds one pair per quantizer)
        self.quantizer = {
            "fsq": lambda: FSQ(self.levels, num_codebooks=num_codebooks, keep_num_codebooks_dim=True),
            "residual": lambda: ResidualQuantizer(self.levels, num_quantizers, code_dims, quantize_dropout),
            "parts": lambda: PartQuantizer(part_levels),
            "none": lambda: None,
        }[quantizer]()
        if quantizer == "parts":
            self.codebook_size = self.quantizer.codebook_size
        self.from_codes = nn.Linear(code_dims - static_dims, d_model)
        if static_dims:
            self.static_in = nn.Parameter(torch.randn(max_frames, static_dims, FEATURES) / math.sqrt(FEATURES))
            self.static_out = nn.Parameter(torch.zeros(max_frames, static_dims, FEATURES))
            self.from_static = nn.Linear(FEATURES, d_model)
        self.decoder = _transformer(d_model, heads, decoder_layers, ff_mult, dropout)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, FEATURES))

    def part_scales(self) -> torch.Tensor:
        """Per part, the root mean dataset variance of its x/y values: the unit of the relative loss (4,)."""
        variance = self.std[:, :2].square()
        return torch.stack([variance[points].mean().sqrt() for points in skeleton.PARTS.values()])

    @property
    def bits_per_frame(self) -> float:
        """Bits of a frame's codes (float32 latents without a quantizer)."""
        if isinstance(self.quantizer, PartQuantizer):
            return self.quantizer.bits
        return self.latent_bits or self.codes_per_frame * math.log2(self.codebook_size)

    def decodes(self, count: int) -> bool:
        """Whether frames of ``count`` codes decode: all of a frame's codes, or a residual model's first 1 or more."""
        if isinstance(self.quantizer, ResidualQuantizer):
            return 1 <= count <= self.codes_per_frame
        return count == self.codes_per_frame > 0

    def accepted(self) -> str:
        """The codes per frame the model decodes, in words."""
        if isinstance(self.quantizer, ResidualQuantizer):
            return f"1 to {self.codes_per_frame} (the first k of its {self.codes_per_frame} residual codes)"
        return f"{self.codes_per_frame}"

    def kept(self, quantizers: int | None) -> int:
        """How many codes a frame keeps with ``quantizers`` (None = all); a UserError for a number that does not
        decode on its own (fewer than all need model.quantizer: residual)."""
        if quantizers is None:
            return self.codes_per_frame
        if not self.decodes(quantizers):
            raise UserError(
                f"--quantizers {quantizers}: this model keeps {self.accepted()} codes per frame"
                + ("" if isinstance(self.quantizer, ResidualQuantizer) else "; fewer need a model.quantizer: residual model")
            )
        return quantizers

    def _positions(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], hidden.device)[None].to(hidden.dtype)

    @staticmethod
    def _per_frame(table: torch.Tensor, frames: int) -> torch.Tensor:
        """The first ``frames`` rows of a per-frame table, zeros beyond its length."""
        return nn.functional.pad(table[:frames], (0, 0, 0, 0, 0, max(frames - len(table), 0)))

    def _standardized(self, poses: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """The encoder's view of ``poses``: standardized, within +-INPUT_LIMIT, 0 where missing (B x T x 534)."""
        standardized = ((poses - self.mean) / self.std).clamp(-INPUT_LIMIT, INPUT_LIMIT)
        return torch.where(observed[..., None], standardized, torch.zeros_like(poses)).flatten(2)

    def _encode(
        self, poses: torch.Tensor, observed: torch.Tensor, padding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantized latents (B x T x code dims, in FSQ's units) and their codes (B x T x codes_per_frame)."""
        standardized = self._standardized(poses, observed)
        latent = self._motion_latent(standardized, observed.to(poses.dtype), padding)
        if self.static_dims:
            weight = (observed & ~padding[..., None]).repeat_interleave(skeleton.DIMS, -1).float()
            static = (standardized.float() * weight).sum(1) / weight.sum(1).clamp_min(1)  # the window's mean pose
            table = self._per_frame(self.static_in, poses.shape[1]).float()
            latent = torch.cat([latent, torch.einsum("tkf,bf->btk", table, static)], dim=-1)
        return self._quantize(latent)

    def _motion_latent(self, standardized: torch.Tensor, flags: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The latent's motion dimensions (B x T x code dims - static_dims, float32): the encoder over whole frames, or
        (:class:`PartStreams`) over each part's own points, each part keeping its own dimensions."""
        if not isinstance(self.embed, PartStreams):
            hidden = self._positions(self.embed(torch.cat([standardized, flags], dim=-1)))
            return self.to_codes(self.encoder(hidden, src_key_padding_mask=padding)).float()
        hidden = self._positions(self.embed(standardized, flags))
        streams = self.encoder(hidden, src_key_padding_mask=padding.repeat(len(self.embed.parts), 1))
        return self.embed.own_dims(self.to_codes(streams).float())

    def _quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantized latents (B x T x code dims) and their codes (B x T x codes_per_frame, int64) of latents
        (B x T x code dims), always in float32: bf16 rounding would merge neighbouring codes. Without a quantizer,
        the latents squashed into [-1, 1] unrounded, and B x T x 0 codes."""
        latent = latent.float()
        if self.quantizer is None:
            return torch.tanh(latent), latent.new_zeros(latent.shape[:-1] + (0,), dtype=torch.long)
        with torch.autocast(device_type=latent.device.type, enabled=False):
            if isinstance(self.quantizer, (ResidualQuantizer, PartQuantizer)):
                return self.quantizer(latent)
            quantized = self.quantizer.quantize(latent.unflatten(-1, (self.num_codebooks, len(self.levels))))
            return quantized.flatten(-2), self.quantizer.codes_to_indices(quantized).long()

    def _from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B x T x code dims) of codes (B x T x k; a residual model's first k codes)."""
        with torch.autocast(device_type=codes.device.type, enabled=False):
            if isinstance(self.quantizer, (ResidualQuantizer, PartQuantizer)):
                return self.quantizer.decode(codes.long())
            return self.quantizer.indices_to_codes(codes.long()).float()

    def _require_codes(self) -> None:
        if self.quantizer is None:
            raise UserError(
                "this model has no quantizer (model.quantizer: none, the unquantized upper bound): it has no codes "
                "to encode or decode; use `reconstruct`, or train with model.quantizer: fsq"
            )

    def _decode(self, codes: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Poses (B x T x 178 x 3, shoulder-normalized) from quantized latents (B x T x code dims)."""
        motion, static = codes[..., : codes.shape[-1] - self.static_dims], codes[..., codes.shape[-1] - self.static_dims :]
        hidden = self.from_codes(motion)
        out = 0.0
        if self.static_dims:
            table = self._per_frame(self.static_out, codes.shape[1])
            mean_pose = torch.einsum("tkf,btk->bf", table, static * (~padding)[..., None])  # standardized units
            hidden = hidden + self.from_static(mean_pose)[:, None]
            out = mean_pose[:, None]
        hidden = self.decoder(self._positions(hidden), src_key_padding_mask=padding)
        out = (self.head(hidden).float() + out).unflatten(-1, (skeleton.NUM_POINTS, skeleton.DIMS))
        return out * self.std + self.mean

    def forward(
        self,
        poses: torch.Tensor,
        observed: torch.Tensor,
        padding: torch.Tensor | None = None,
        quantizers: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct ``poses`` (B x T x 178 x 3; ``observed`` B x T x 178 bool; ``padding`` B x T, True = pad) from
        all codes of a frame, or from the first ``quantizers`` of a residual model.

        Returns the reconstruction (B x T x 178 x 3) and the codes it used (B x T x codes_per_frame or
        ``quantizers``, int64; -1 for the quantizers a training batch of a residual model drops).
        """
        kept = self.kept(quantizers)
        padding = _no_padding(poses) if padding is None else padding
        quantized, codes = self._encode(poses, observed, padding)
        if kept < codes.shape[-1]:
            codes = codes[..., :kept]
            quantized = self._from_codes(codes)
        return self._decode(quantized.to(poses.dtype), padding), codes

    @torch.no_grad()
    def encode(
        self,
        poses: torch.Tensor,
        observed: torch.Tensor,
        padding: torch.Tensor | None = None,
        quantizers: int | None = None,
    ) -> torch.Tensor:
        """Codes per frame (B x T x codes_per_frame, int64), or a residual model's first ``quantizers``."""
        self._require_codes()
        kept = self.kept(quantizers)
        padding = _no_padding(poses) if padding is None else padding
        return self._encode(poses, observed, padding)[1][..., :kept]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Poses (B x T x 178 x 3, shoulder-normalized) from codes (B x T x codes_per_frame, or a residual model's
        first k codes of each frame)."""
        self._require_codes()
        if not self.decodes(codes.shape[-1]):
            raise UserError(f"codes have {codes.shape[-1]} codes per frame; this model decodes {self.accepted()}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise UserError(
                f"codes out of range [{int(codes.min())}, {int(codes.max())}]; "
                f"this model's codes are 0..{self.codebook_size - 1}"
            )
        padding = _no_padding(codes) if padding is None else padding
        if isinstance(self.quantizer, PartQuantizer) and not self.quantizer.in_range(codes[~padding]):
            ranges = ", ".join(f"{name} {o}..{o + n - 1}" for name, o, n in
                               zip(PART_GROUPS, self.quantizer.offsets, self.quantizer.sizes))
            raise UserError(f"a code lies outside its part's range; this model's codes per frame are: {ranges}")
        return self._decode(self._from_codes(codes), padding)


def part_weighted_mse(
    recon: torch.Tensor,
    target: torch.Tensor,
    observed: torch.Tensor,
    part_weights: dict[str, float] | None = None,
    part_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """MSE over observed values only: the mean within each part, then weighted over parts.

    In shoulder widths², or relative to each part's scale (``part_scales``, 4 values) so that the small motions of
    the face count as much as the large ones of the hands.
    """
    weights = part_weights or {name: 1.0 for name in skeleton.PARTS}
    squared = (recon.float() - target.float()).square().sum(-1)  # B x T x 178
    total = squared.sum() * 0.0  # a batch with nothing observed gives 0 that still back-propagates (no gradient)
    weight_sum = 0.0
    for i, (name, points) in enumerate(skeleton.PARTS.items()):
        seen = observed[..., points]
        if weights.get(name, 0.0) == 0 or not seen.any():
            continue
        part = squared[..., points][seen].mean() / skeleton.DIMS
        if part_scales is not None:
            part = part / part_scales[i].square()
        total = total + weights[name] * part
        weight_sum += weights[name]
    return total / max(weight_sum, 1e-12)


def model_kwargs(config: TrainConfig) -> dict:
    """The constructor arguments of the model section of a train config (and its ``max_frames``)."""
    return {**as_dict(config.model), "max_frames": config.max_frames}


def _unreadable(path: Path, error: Exception) -> UserError:
    """The one-line error for a file ``torch.load`` refused or could not parse."""
    refused = re.search(r"GLOBAL (\S+)", str(error))
    if refused:
        return UserError(
            f"{path}: refused to load: the file asks to run {refused.group(1)} when unpickled, and a sign-vq "
            "checkpoint holds only weights and plain values — use a model.ckpt from `sign-vq train` that you trust"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return UserError(
        f"{path}: not a sign-vq checkpoint, unreadable ({type(error).__name__}: {first[:160]}); "
        "expected a model.ckpt written by `sign-vq train` — copy it again or retrain"
    )


def _check_contents(path: Path, checkpoint: object) -> None:
    """A UserError unless ``checkpoint`` has a config and a state dict of finite tensors."""
    config = checkpoint.get("hyper_parameters", {}).get("config") if isinstance(checkpoint, dict) else None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(config, dict) or not isinstance(state, dict):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise UserError(
            f"{path}: not a sign-vq checkpoint: expected `hyper_parameters.config` and `state_dict`, found {found}; "
            "use a model.ckpt written by `sign-vq train`"
        )
    check_weights(path, state)


def check_weights(path: Path, state: dict) -> None:
    """A UserError naming ``path`` unless every entry of ``state`` is a tensor of finite values."""
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: not a sign-vq checkpoint: state_dict entry {name} is a {type(value).__name__}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(
                f"{path}: {bad} non-finite (NaN/inf) value(s) in weight {name}; the training diverged or the file "
                "is damaged — use an earlier checkpoint or retrain"
            )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """A checkpoint's contents, loaded without running code (``weights_only``); a one-line UserError naming the file
    for a missing, truncated, garbage, foreign or code-carrying file, and for non-finite weights."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model; train one with `sign-vq train` (it writes DIR/model.ckpt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on a foreign pickle protocol: the error says it all
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError) as error:
        raise _unreadable(path, error) from None
    _check_contents(path, checkpoint)
    return checkpoint


def _mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What differs between ``model``'s weights and ``state`` (empty when they fit), in one line."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state
              and state[k].shape != v.shape]
    problems = [
        f"{len(items)} {what} (first: {items[0]})"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong-shaped", shapes))
        if items
    ]
    return "; ".join(problems)


def build_model(path: Path, hyper: TrainConfig, state: dict[str, torch.Tensor]) -> PoseFSQAutoencoder:
    """The model of ``hyper`` with the weights ``state`` (read from ``path``, named in errors), in eval mode."""
    try:
        model = PoseFSQAutoencoder(**model_kwargs(hyper))
    except (UserError, AssertionError, ValueError, RuntimeError) as error:
        raise UserError(f"{path}: its saved model configuration cannot build a model ({error})") from None
    problem = _mismatch(model, state)
    if problem:
        raise UserError(f"{path}: does not match its model configuration: {problem}")
    model.load_state_dict(state)
    model.std.clamp_(min=STD_FLOOR)  # as the constructor does with the statistics it is given
    model.train_config = hyper
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> PoseFSQAutoencoder:
    """Load a trained model: a `.ckpt` file, a training output folder (its `model.ckpt`), a model folder written by
    `sign-vq export` (read on the CPU), or a hub repository ``org/name`` (see :mod:`sign_vq.hub`)."""
    path = hub.resolve(path)
    if hub.is_model_folder(path):
        hyper, state = hub.read_folder(path)
        check_weights(path / hub.WEIGHTS, state)
        return build_model(path / hub.WEIGHTS, hyper, state)
    if path.is_dir():
        path = path / "model.ckpt"
    checkpoint = read_checkpoint(path, map_location)
    hyper = train_config(checkpoint["hyper_parameters"]["config"], f"{path} (its saved config)")
    state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    return build_model(path, hyper, state)


def load_on(model: Path, device: str = "cpu") -> PoseFSQAutoencoder:
    """:func:`load_model` onto ``device`` (e.g. ``cpu``, ``cuda``, ``cuda:1``), with a clear error if it is absent."""
    try:
        target = torch.device(device)
    except RuntimeError as error:
        raise UserError(f"--device {device}: {error}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return load_model(model, map_location=target).to(target)
