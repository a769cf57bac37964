"""The reconstruction loss: mean squared error per body part over observed points, weighted per part."""

from __future__ import annotations

import torch

from sign_vq.poses import skeleton


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
