"""The FSQ pose autoencoder: transformer encoder -> FSQ codes per frame -> transformer decoder.

Poses enter and leave in shoulder-normalized units (frames x 178 x 3, as written by `normalize`). The dataset
mean/std are buffers of the model, so a checkpoint alone is enough for inference.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from vector_quantize_pytorch import FSQ

from sign_vq import skeleton
from sign_vq.errors import UserError

STD_FLOOR = 0.01  # shoulder widths: keeps near-constant coordinates (MediaPipe z) from being blown up
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


def _no_padding(batch: torch.Tensor) -> torch.Tensor:
    """A B x T padding mask with no padded frame, for a batch shaped B x T x ..."""
    return torch.zeros(batch.shape[:2], dtype=torch.bool, device=batch.device)


class PoseFSQAutoencoder(nn.Module):
    """Encode poses into ``num_codebooks`` FSQ codes per frame and decode codes back into poses."""

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
    ):
        super().__init__()
        shape = (skeleton.NUM_POINTS, skeleton.DIMS)
        mean = torch.zeros(shape) if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std = torch.ones(shape) if std is None else torch.as_tensor(np.asarray(std), dtype=torch.float32)
        self.register_buffer("mean", mean.reshape(shape).clone())
        self.register_buffer("std", std.reshape(shape).clamp_min(STD_FLOOR))
        self.levels = list(levels)
        self.num_codebooks = num_codebooks
        self.codebook_size = int(np.prod(self.levels))
        # input per frame: standardized values (0 where missing) and the observed flag of each point
        self.embed = nn.Linear(FEATURES + skeleton.NUM_POINTS, d_model)
        self.encoder = _transformer(d_model, heads, encoder_layers, ff_mult, dropout)
        self.quantizer = FSQ(levels=self.levels, dim=d_model, num_codebooks=num_codebooks, keep_num_codebooks_dim=True)
        self.decoder = _transformer(d_model, heads, decoder_layers, ff_mult, dropout)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, FEATURES))

    def part_scales(self) -> torch.Tensor:
        """Per part, the root mean dataset variance of its x/y values: the unit of the relative loss (4,)."""
        variance = self.std[:, :2].square()
        return torch.stack([variance[points].mean().sqrt() for points in skeleton.PARTS.values()])

    @property
    def bits_per_frame(self) -> float:
        return self.num_codebooks * math.log2(self.codebook_size)

    def _positions(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + sinusoidal_positions(hidden.shape[1], hidden.shape[2], hidden.device)[None].to(hidden.dtype)

    def _quantize(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # FSQ in float32 whatever the training precision: bf16 rounding merges neighbouring codes.
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            quantized, indices = self.quantizer(hidden.float())
        return quantized, indices

    def _encode_hidden(self, poses: torch.Tensor, observed: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        standardized = torch.where(observed[..., None], (poses - self.mean) / self.std, torch.zeros_like(poses))
        features = torch.cat([standardized.flatten(2), observed.to(poses.dtype)], dim=-1)
        hidden = self._positions(self.embed(features))
        return self.encoder(hidden, src_key_padding_mask=padding)

    def _decode_hidden(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        hidden = self.decoder(self._positions(hidden), src_key_padding_mask=padding)
        out = self.head(hidden).float().unflatten(-1, (skeleton.NUM_POINTS, skeleton.DIMS))
        return out * self.std + self.mean

    def forward(
        self, poses: torch.Tensor, observed: torch.Tensor, padding: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct ``poses`` (B x T x 178 x 3; ``observed`` B x T x 178 bool; ``padding`` B x T, True = pad).

        Returns the reconstruction (B x T x 178 x 3) and the codes (B x T x num_codebooks, int64).
        """
        padding = _no_padding(poses) if padding is None else padding
        quantized, indices = self._quantize(self._encode_hidden(poses, observed, padding))
        return self._decode_hidden(quantized.to(poses.dtype), padding), indices.long()

    @torch.no_grad()
    def encode(self, poses: torch.Tensor, observed: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Codes per frame (B x T x num_codebooks, int64)."""
        padding = _no_padding(poses) if padding is None else padding
        return self._quantize(self._encode_hidden(poses, observed, padding))[1].long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """Poses (B x T x 178 x 3, shoulder-normalized) from codes (B x T x num_codebooks)."""
        if codes.shape[-1] != self.num_codebooks:
            raise UserError(f"codes have {codes.shape[-1]} codebooks per frame; this model uses {self.num_codebooks}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise UserError(
                f"codes out of range [{int(codes.min())}, {int(codes.max())}]; "
                f"this model's codes are 0..{self.codebook_size - 1}"
            )
        padding = _no_padding(codes) if padding is None else padding
        quantized = self.quantizer.indices_to_codes(codes.int())
        return self._decode_hidden(quantized, padding)


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
    total = recon.new_zeros((), dtype=torch.float32)
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


def model_kwargs(train_config: dict) -> dict:
    """The constructor arguments of the model section of a train config."""
    return dict(train_config["model"])


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> PoseFSQAutoencoder:
    """Load a trained model from a `.ckpt` file or a training output folder (its `model.ckpt`)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.ckpt"
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
        hyper = checkpoint["hyper_parameters"]["config"]
        state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    except FileNotFoundError:
        raise UserError(f"{path}: no such model; train one with `sign-vq train` (it writes DIR/model.ckpt)") from None
    except (KeyError, TypeError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(f"{path}: not a sign-vq checkpoint ({type(error).__name__}: {error})") from None
    model = PoseFSQAutoencoder(**model_kwargs(hyper))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"{path}: checkpoint does not match its model configuration ({error})") from None
    model.train_config = hyper
    return model.eval()
