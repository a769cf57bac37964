"""The FSQ pose autoencoder: transformer encoder -> FSQ codes per frame -> transformer decoder.

The quantizer is a product of FSQ codebooks (``fsq``: each code quantizes its own chunk of the latent), a residual
FSQ (``residual``, :class:`~.quantizers.ResidualQuantizer`: each code quantizes what the codes before it left, so
the first k of them decode on their own), one FSQ codebook per body part (``parts``, :class:`~.parts.PartQuantizer`:
hands, face and body each encoded from their own points, with their own levels), or none (the unquantized upper
bound).

Poses enter and leave in shoulder-normalized units (frames x 178 x 3, as written by `normalize`). The dataset
mean/std are buffers of the model, so a checkpoint alone is enough for inference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from vector_quantize_pytorch import FSQ

from sign_vq.config import ModelConfig
from sign_vq.errors import UserError
from sign_vq.model.parts import PART_GROUPS, PartQuantizer, PartStreams
from sign_vq.model.quantizers import ResidualQuantizer
from sign_vq.poses import skeleton

STD_FLOOR = 0.01  # shoulder widths: keeps near-constant coordinates (MediaPipe z) from being blown up
# Standard deviations: the encoder sees a value at most this far from the dataset mean. 1 in ~6,000 values of the
# quality benchmark's training poses lies beyond it; a tracking glitch far beyond it (a hand 5 shoulder widths off)
# would otherwise swamp the whole window's codes and spoil every part of it.
INPUT_LIMIT = 5.0
FEATURES = skeleton.NUM_POINTS * skeleton.DIMS


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


def code_dims(config: ModelConfig) -> int:
    """Latent dimensions a frame's codes quantize: every codebook's, residual quantizer's (each as wide as a codebook:
    the product's size at the same bits) or part's levels."""
    if config.quantizer == "parts":
        return sum(len(levels) for levels in config.part_levels.values())
    return (config.num_quantizers if config.quantizer == "residual" else config.num_codebooks) * len(config.levels)


def _no_padding(batch: torch.Tensor) -> torch.Tensor:
    """A B x T padding mask with no padded frame, for a batch shaped B x T x ..."""
    return torch.zeros(batch.shape[:2], dtype=torch.bool, device=batch.device)


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

    ``quantizer="parts"`` (:class:`~.parts.PartQuantizer`, :class:`~.parts.PartStreams`) has one code per part of
    :data:`~.parts.PART_GROUPS` (hands, face, body), each of its own ``part_levels``; the encoder (its weights shared)
    runs once per part on that part's points, the decoder reads all codes. The static channel, when on, sends the
    whole window's mean pose through the body's last ``static_dims`` dimensions.
    """

    def __init__(
        self,
        config: ModelConfig,
        max_frames: int,
        mean: np.ndarray | torch.Tensor | None = None,
        std: np.ndarray | torch.Tensor | None = None,
    ):
        super().__init__()
        shape = (skeleton.NUM_POINTS, skeleton.DIMS)
        mean = torch.zeros(shape) if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.ones(shape) if std is None else torch.as_tensor(np.asarray(std), dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(shape).clone())
        self.register_buffer("std", std.reshape(shape).clamp_min(STD_FLOOR))
        self.levels = list(config.levels)
        self.num_codebooks = config.num_codebooks
        self.max_frames = max_frames  # the window length it was trained on (inference cuts longer poses)
        # part -> levels, in the latent's order (hands, face, body)
        parts = {name: list(config.part_levels[name]) for name in PART_GROUPS} if config.quantizer == "parts" else None
        self.part_levels, dims = parts, code_dims(config)
        # codes a frame carries: one per codebook, one per residual quantizer (the first k of them decode alone), or
        # one per part
        self.codes_per_frame = {"fsq": config.num_codebooks, "residual": config.num_quantizers,
                                "parts": len(PART_GROUPS), "none": 0}[config.quantizer]
        self.latent_bits = 32 * dims if config.quantizer == "none" else 0  # float32 latents
        self.static_dims = config.static_dims
        self.embed = self._embedding(config)
        self.encoder = _transformer(config.d_model, config.heads, config.encoder_layers, config.ff_mult, config.dropout)
        self.to_codes = nn.Linear(config.d_model, dims - config.static_dims)
        # projections are ours (to_codes/from_codes): FSQ's input is the code dimensions themselves (a residual
        # quantizer adds one pair per quantizer)
        self.quantizer = {
            "fsq": lambda: FSQ(self.levels, num_codebooks=config.num_codebooks, keep_num_codebooks_dim=True),
            "residual": lambda: ResidualQuantizer(self.levels, config.num_quantizers, dims, config.quantize_dropout),
            "parts": lambda: PartQuantizer(parts),
            "none": lambda: None,
        }[config.quantizer]()
        self.codebook_size = (self.quantizer.codebook_size if parts
                              else 0 if self.quantizer is None else math.prod(self.levels))
        self.from_codes = nn.Linear(dims - config.static_dims, config.d_model)
        if config.static_dims:
            self.static_in = nn.Parameter(torch.randn(max_frames, config.static_dims, FEATURES) / math.sqrt(FEATURES))
            self.static_out = nn.Parameter(torch.zeros(max_frames, config.static_dims, FEATURES))
            self.from_static = nn.Linear(FEATURES, config.d_model)
        self.decoder = _transformer(config.d_model, config.heads, config.decoder_layers, config.ff_mult, config.dropout)
        self.head = nn.Sequential(nn.LayerNorm(config.d_model), nn.Linear(config.d_model, FEATURES))

    def _embedding(self, config: ModelConfig) -> nn.Module:
        """The encoder's input per frame: standardized values (0 where missing) and the observed flag of each point;
        under parts one stream per part, each with its own motion dimensions (the body's last static_dims are the
        static channel's)."""
        if self.part_levels is None:
            return nn.Linear(FEATURES + skeleton.NUM_POINTS, config.d_model)
        motion = [len(levels) - config.static_dims * (name == "body") for name, levels in self.part_levels.items()]
        return PartStreams(list(PART_GROUPS.values()), motion, config.d_model)

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


