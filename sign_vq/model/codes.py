"""Arrays <-> codes with a model: windowed encode, decode and reconstruct of normalized pose arrays, and the check
that codes fit the model."""

from __future__ import annotations

import numpy as np

from sign_vq.errors import UserError
from sign_vq.formats import corpus
from sign_vq.model.network import PoseFSQAutoencoder
from sign_vq.model.windows import windowed


def _valid(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``values`` when ``ok`` holds everywhere; else a UserError: the model's weights overflow."""
    if not ok.all():
        raise UserError(
            f"the model produced {int(np.count_nonzero(~ok))} invalid value(s) (NaN/inf, or codes out of range); "
            "its weights overflow — use another checkpoint or retrain"
        )
    return values


def _finite(values: np.ndarray) -> np.ndarray:
    return _valid(values, np.isfinite(values))


def _in_range(model: PoseFSQAutoencoder, codes: np.ndarray) -> np.ndarray:
    return _valid(codes, (codes >= 0) & (codes < model.codebook_size))


def _inputs(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    observed = ~np.asarray(mask, dtype=bool)
    values = np.where(observed[..., None], np.asarray(data, dtype=np.float32), 0.0).astype(np.float32)
    return values, observed


def reconstruct_arrays(
    model: PoseFSQAutoencoder, poses: list[tuple[np.ndarray, np.ndarray]], quantizers: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reconstructions (T x 178 x 3 float32, normalized) and codes (T x K int64) of normalized poses (data, mask),
    from all codes of a frame or a residual model's first ``quantizers``."""
    inputs = [_inputs(data, mask) for data, mask in poses]
    results = windowed(model, inputs, lambda *batch: model(*batch, quantizers=quantizers))
    return [(_finite(recon.astype(np.float32)), codes.astype(np.int64)) for recon, codes in results]


def reconstruct_array(
    model: PoseFSQAutoencoder, data: np.ndarray, mask: np.ndarray, quantizers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction (T x 178 x 3 float32, normalized) and codes (T x K int64) of one normalized pose, windowed."""
    return reconstruct_arrays(model, [(data, mask)], quantizers)[0]


def encode_arrays(
    model: PoseFSQAutoencoder, poses: list[tuple[np.ndarray, np.ndarray]], quantizers: int | None = None
) -> list[np.ndarray]:
    """Codes (T x codes per frame, int64; a residual model's first ``quantizers``) of normalized poses (data
    T x 178 x 3, mask T x 178 True = missing)."""
    inputs = [_inputs(data, mask) for data, mask in poses]
    results = windowed(model, inputs, lambda *batch: (model.encode(*batch, quantizers=quantizers),))
    return [_in_range(model, codes.astype(np.int64)) for codes, in results]


def encode_array(model: PoseFSQAutoencoder, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Codes (T x codes per frame, int64) of one normalized pose (T x 178 x 3, mask T x 178 True = missing)."""
    return encode_arrays(model, [(data, mask)])[0]


def check_codes(model: PoseFSQAutoencoder, codes: np.ndarray, name: str) -> np.ndarray:
    """``codes`` as a T x K int64 array (K: all of a frame's codes, or a residual model's first K), or a UserError
    naming ``name`` and what is wrong."""
    codes = np.asarray(codes)
    if codes.ndim == 1 and model.decodes(1):
        codes = codes[:, None]
    if codes.ndim != 2 or not model.decodes(codes.shape[1]) or codes.shape[0] == 0:
        raise UserError(
            f"{name}: codes of shape {codes.shape}; this model expects frames x {model.accepted()} "
            f"(one row per frame, at least one frame)"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"{name}: codes of dtype {codes.dtype}; expected integers (as `sign-vq encode` writes)")
    if len(codes) > corpus.MAX_DECODE_FRAMES:
        raise UserError(f"{name}: {len(codes)} frames; decode takes at most {corpus.MAX_DECODE_FRAMES} at once: "
                        "split the codes")
    codes = codes.astype(np.int64)
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= model.codebook_size:
        raise UserError(
            f"{name}: codes out of range [{low}, {high}]; this model's codes are 0..{model.codebook_size - 1}"
        )
    return codes


def decode_arrays(model: PoseFSQAutoencoder, codes: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    """Normalized poses (T x 178 x 3 float32) from codes (T x K, see :func:`check_codes`), windowed like
    :func:`encode_arrays`."""
    checked = [(check_codes(model, c, name),) for c, name in zip(codes, names)]
    results = windowed(model, checked, lambda batch, padding: (model.decode(batch, padding),))
    return [_finite(poses.astype(np.float32)) for poses, in results]


def decode_array(model: PoseFSQAutoencoder, codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """Normalized poses (T x 178 x 3 float32) from one pose's codes (T x K, see :func:`check_codes`)."""
    return decode_arrays(model, [codes], [name])[0]
