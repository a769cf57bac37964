"""Reconstruction and codebook metrics, each next to a trivial reference so numbers have context.

Units: errors are mean per-point L2 distances (x, y, z) in shoulder widths. Normalization is a translation and one
scale per pose (its mean shoulder width), so this equals the error in the pose's original coordinates divided by its
shoulder width. Only observed (unmasked, unpadded) points count. The trivial reference predicts every frame of a
pose as that pose's own per-point mean over its frames (over each batch item: a whole pose in `render`, a window of
``max_frames`` in training validation).

- ``error_<part>`` = sum over observed points of ||recon - target||_2 / their count, per part (body, face, hands,
  and ``all`` of them);
  ``reference_<part>`` the same for the trivial reference; ``ratio_<part>`` = error / reference (< 1 beats it).
  With ``scale`` (each pose's shoulder width in pixels) ``error_px_<part>``/``reference_px_<part>`` are in pixels.
- ``motion_<part>`` = the same error after removing each pose's own per-point mean from the reconstruction and from
  the original (a constant offset costs nothing); its reference is the motion's own size, ``reference_<part>``,
  so ``ratio_motion_<part>`` = motion / reference.
- ``handshape_<hand>`` = the error of the hand's 20 finger points relative to its wrist (both hands aligned at the
  wrist, frames where the wrist and the point are observed); ``reference_handshape_<hand>`` predicts the pose's own
  mean handshape; ``ratio_handshape_<hand>`` their ratio.
- ``dtw_<part>`` (with ``dtw=True``): the DTW mean joint error of Ham2Pose's nDTW-MJE on shoulder-normalized poses:
  each point's trajectory is aligned to the original's by DTW (tslearn) under a masked distance (0 where the original
  lacks the point; half the original point's norm where only the reconstruction lacks it; else the L2 distance),
  and the alignment costs are summed over the part and divided by its observed point-frames (``ratio_dtw_<part>``
  divides by ``reference_<part>``, which is also the DTW error of the trivial reference). Never above ``error_``.
- ``dtwp`` and ``ndtwp`` (with ``dtw=True``): pose-evaluation's two recommended metrics (Jiang et al., "Meaningful
  Pose-Based Sign Language Evaluation", WMT 2025), per whole pose, averaged over poses: the hands only (42 points),
  each point's trajectory in the reconstruction aligned to the original's by DTW (dtaidistance's distance: the square
  root of the least sum of squared L2 distances along a warping path, :func:`dtw_distances`), the mean over the points.
  DTWp: each pose trimmed at start and end (:func:`signing_span`), missing values filled with 10, in the original's
  own (pixel) coordinates; nDTWp: untrimmed, each pose normalized by its own shoulders (pose-format's
  ``Pose.normalize``), missing values filled with 1. ``reference_dtwp``/``reference_ndtwp`` score the trivial
  reference; ``ratio_*`` divides by them.
- ``mse`` = mean over observed values (x, y, z separately) of (recon - target)^2, shoulder widths^2;
  ``reference_mse``/``ratio_mse`` likewise.
- ``jitter`` = mean ||recon[t+1] - 2 recon[t] + recon[t-1]||_2 over points observed in the three frames (shoulder
  widths per frame^2); ``jitter_target`` the same for the original; ``ratio_jitter`` = jitter / jitter_target.
  ``accel_error`` = mean ||(recon - target)[t+1] - 2 (recon - target)[t] + (recon - target)[t-1]||_2 over the same
  points (the acceleration error of motion papers); ``ratio_accel`` = accel_error / jitter_target.
- ``codebook_utilization`` = fraction of the ``codebook_size`` codes used at least once (all codebooks pooled);
  ``perplexity`` = exp(entropy) of the code histogram (at most ``codebook_size``).
- ``bits_per_frame`` = num_codebooks * log2(codebook_size); ``compression_ratio`` = float16 bits of a frame
  (178 x 3 x 16) / bits_per_frame.

Every accumulated state is a sum tensor, so summing them over processes (:meth:`ReconstructionMetrics.reduce`) gives
the metrics of everything the processes saw.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from sign_vq.errors import UserError
from sign_vq.evaluation.names import HANDS, SCOPES, metric_name
from sign_vq.poses import skeleton

FLOAT16_BITS_PER_FRAME = skeleton.NUM_POINTS * skeleton.DIMS * 16
# Rows of the per-point sums: model error, trivial reference, motion error, DTW cost, observed frames, and in pixels.
POINT_ROWS = ("error", "reference", "motion", "dtw", "count", "error_px", "reference_px", "count_px")
_ROW = {row: i for i, row in enumerate(POINT_ROWS)}
HAND_POINTS = np.r_[skeleton.PARTS["left_hand"], skeleton.PARTS["right_hand"]]
ELBOW = {"left": 2, "right": 3}
DTWP_FILL, NDTWP_FILL = 10.0, 1.0  # pose-evaluation's fill values of missing points: pixels, shoulder widths
TRIM_MARGIN = 5  # frames kept before the first and after the last frame with a raised wrist (DTWp's trim)
DTW_CELLS = 2**22  # alignment cells computed at once (32 MiB of float64)
# Per-pose sums with dtw=True: DTWp and nDTWp of the model and of the trivial reference, and the poses they count.
POSE_ROWS = ("dtwp", "reference_dtwp", "ndtwp", "reference_ndtwp", "poses")


def trivial_reference(poses: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Every frame predicted as the pose's own per-point mean over its observed frames (B x T x N x 3)."""
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


def dtw_point_costs(
    hyp: torch.Tensor, hyp_observed: torch.Tensor, ref: torch.Tensor, ref_observed: torch.Tensor
) -> torch.Tensor:
    """Per point (N,), the cost of the best DTW alignment of its trajectory in ``hyp`` (T1 x N x 3) to the one in
    ``ref`` (T2 x N x 3), with Ham2Pose's masked distance (observed masks T1 x N and T2 x N): 0 where ``ref`` lacks
    the point, half the norm of the ``ref`` point where only ``hyp`` lacks it, else the L2 distance."""
    try:
        from tslearn.metrics import dtw_path_from_metric
    except ImportError:
        raise UserError("DTW metrics need tslearn: pip install 'sign-vq[quality]'") from None
    hyp, ref = hyp.double().transpose(0, 1), ref.double().transpose(0, 1)  # points x frames x 3
    hyp_seen, ref_seen = hyp_observed.T, ref_observed.T
    costs = np.zeros(len(ref))
    points = torch.nonzero(ref_seen.any(1)).flatten()
    for chunk in points.split(max(1, 2**22 // max(hyp.shape[1] * ref.shape[1], 1))):  # <= 32 MiB of local costs
        local = torch.cdist(hyp[chunk], ref[chunk], compute_mode="donot_use_mm_for_euclid_dist")
        local = torch.where(hyp_seen[chunk, :, None], local, ref[chunk].norm(dim=-1)[:, None] / 2)
        local = local * ref_seen[chunk, None]
        for point, matrix in zip(chunk.tolist(), local.numpy()):
            costs[point] = dtw_path_from_metric(matrix, metric="precomputed", be="numpy")[1]  # be: no input sniffing
    return torch.from_numpy(costs)


def dtw_distances(hyp: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per trajectory (P,), the DTW distance of ``hyp`` (P x T1 x D) to ``ref`` (P x T2 x D) as dtaidistance defines
    it: the square root of the least sum of squared L2 distances along a warping path (no window, no pruning)."""
    hyp, ref = np.asarray(hyp, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    (count, first, second), chunk = hyp.shape[:2] + ref.shape[1:2], max(1, DTW_CELLS // (hyp.shape[1] * ref.shape[1]))
    distances = np.empty(count)
    for start in range(0, count, chunk):
        a, b = hyp[start : start + chunk], ref[start : start + chunk]
        total = np.full((len(a), first + 1, second + 1), np.inf)
        total[:, 0, 0] = 0.0
        for diagonal in range(2, first + second + 1):  # cells (i, j) with i + j = diagonal depend on earlier ones only
            i = np.arange(max(1, diagonal - second), min(first, diagonal - 1) + 1)
            j = diagonal - i
            cost = np.square(a[:, i - 1] - b[:, j - 1]).sum(-1)
            best = np.minimum(np.minimum(total[:, i - 1, j], total[:, i, j - 1]), total[:, i - 1, j - 1])
            total[:, i, j] = cost + best
        distances[start : start + chunk] = np.sqrt(total[:, first, second])
    return distances


def signing_span(data: np.ndarray, observed: np.ndarray) -> tuple[int, int]:
    """DTWp's trim (pose-evaluation's TrimMeaninglessFramesPoseProcessor, spoken-to-signed's ``trim_pose``): frames
    [start, end) from 5 before the first to 5 after the last frame in which a body wrist is above its elbow (image y
    grows downwards; both points observed), within the frames that see that wrist, over both arms; every frame when
    no wrist is ever raised. ``data`` T x 178 x 3, ``observed`` T x 178."""
    starts, ends = [], []
    for side, elbow in ELBOW.items():
        wrist = skeleton.BODY_WRIST[side]
        seen = np.flatnonzero(observed[:, wrist])
        raised = np.flatnonzero(observed[:, wrist] & observed[:, elbow] & (data[:, wrist, 1] < data[:, elbow, 1]))
        if len(raised):
            starts.append(max(seen[0], raised[0] - TRIM_MARGIN))
            ends.append(min(seen[-1] + 1, raised[-1] + 1 + TRIM_MARGIN))
    return (int(min(starts)), int(max(ends))) if starts else (0, len(data))


def shoulder_normalized(data: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """pose-format's ``Pose.normalize``: ``data`` (T x 178 x 3) moved by the mean shoulder midpoint and divided by the
    mean 3-D shoulder width, both over the frames that observe both shoulders; without a shoulder width (no such
    frame, or the shoulders at one place) ``data`` as it is, where pose-format would give NaN."""
    both = observed[:, skeleton.LEFT_SHOULDER] & observed[:, skeleton.RIGHT_SHOULDER]
    left, right = data[both, skeleton.LEFT_SHOULDER], data[both, skeleton.RIGHT_SHOULDER]
    width = np.linalg.norm(left - right, axis=-1).mean() if both.any() else 0.0
    return (data - (left + right).mean(0) / 2) / width if width > 0 else data


def hands_dtw(hyp: np.ndarray, hyp_observed: np.ndarray, ref: np.ndarray, ref_observed: np.ndarray,
              fill: float) -> float:
    """The mean over the 42 hand points of the DTW distance (:func:`dtw_distances`) of their trajectories, missing
    values filled with ``fill`` (poses T x 178 x 3, observed T x 178)."""
    hyp_hands, ref_hands = (
        np.where(seen[:, HAND_POINTS, None], poses[:, HAND_POINTS], fill).transpose(1, 0, 2)
        for poses, seen in ((hyp, hyp_observed), (ref, ref_observed))
    )
    return float(dtw_distances(hyp_hands, ref_hands).mean())


def dtwp(hyp: np.ndarray, hyp_observed: np.ndarray, ref: np.ndarray, ref_observed: np.ndarray) -> float:
    """pose-evaluation's DTWp of ``hyp`` against ``ref`` (T x 178 x 3 in the poses' own, unnormalized coordinates;
    observed T x 178): each trimmed by :func:`signing_span`, hands only, missing values 10."""
    (a, b), (c, d) = signing_span(hyp, hyp_observed), signing_span(ref, ref_observed)
    return hands_dtw(hyp[a:b], hyp_observed[a:b], ref[c:d], ref_observed[c:d], DTWP_FILL)


def ndtwp(hyp: np.ndarray, hyp_observed: np.ndarray, ref: np.ndarray, ref_observed: np.ndarray) -> float:
    """pose-evaluation's nDTWp of ``hyp`` against ``ref`` (T x 178 x 3, any coordinates; observed T x 178): each
    normalized by its own shoulders (:func:`shoulder_normalized`), untrimmed, hands only, missing values 1."""
    return hands_dtw(shoulder_normalized(hyp, hyp_observed), hyp_observed,
                     shoulder_normalized(ref, ref_observed), ref_observed, NDTWP_FILL)


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else math.nan


class ReconstructionMetrics:
    """Accumulates per-point and per-part errors (model and trivial reference) and the code histogram over batches.

    ``dtw`` adds the DTW errors (``dtw_<part>``; needs tslearn, the `quality` extra): meant for whole poses.
    """

    def __init__(self, codebook_size: int, bits_per_frame: float, dtw: bool = False):
        self.codebook_size = codebook_size
        self.bits_per_frame = bits_per_frame
        self.dtw = dtw
        self.reset()

    def reset(self) -> None:
        float64 = {"dtype": torch.float64}
        self.points = torch.zeros(len(POINT_ROWS), skeleton.NUM_POINTS, **float64)  # sums per point, POINT_ROWS
        self.hands = torch.zeros(len(HANDS), 3, **float64)  # handshape error, reference, count per hand
        self.squared = torch.zeros(3, **float64)  # squared error, squared reference error, observed values
        self.jitter = torch.zeros(4, **float64)  # reconstruction, target, acceleration error, count
        self.pose_dtw = torch.zeros(len(POSE_ROWS), **float64)  # sums of POSE_ROWS (with dtw)
        self.frames = torch.zeros((), dtype=torch.int64)
        self.codes = torch.zeros(self.codebook_size, dtype=torch.int64)

    def reduce(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every accumulated sum by ``reduce_sum`` of it (the sum over DDP ranks): afterwards :meth:`compute`
        gives the metrics of the whole split, as if one process had seen every batch."""
        for attribute, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, attribute, reduce_sum(value))

    def _add_points(self, row: str, per_point: torch.Tensor, observed: torch.Tensor) -> None:
        """Add a B x T x 178 quantity, summed over observed frames, to the per-point sums of ``row``."""
        self.points[_ROW[row]] += (per_point * observed).sum((0, 1))

    @torch.no_grad()
    def update(
        self,
        recon: torch.Tensor,
        target: torch.Tensor,
        observed: torch.Tensor,
        codes: torch.Tensor | None = None,
        padding: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        center: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: B x T x 178 x 3 poses, B x T x 178 observed, B x T x K codes, B x T padding.

        ``scale`` (B, optional): each pose's shoulder width in pixels, for the ``error_px_*`` metrics; with ``center``
        (B x 3, its shoulder midpoint in pixels) DTWp is in pixels, else in the poses' units.
        """
        recon, target = recon.detach().double().cpu(), target.detach().double().cpu()
        valid = torch.ones(target.shape[:2], dtype=torch.bool) if padding is None else ~padding.cpu()
        observed = observed.detach().cpu() & valid[..., None]
        trivial = trivial_reference(target, observed)
        distance, reference = (recon - target).norm(dim=-1), (trivial - target).norm(dim=-1)
        motion = recon - trivial_reference(recon, observed) - (target - trivial)
        for row, value in (("error", distance), ("reference", reference), ("motion", motion.norm(dim=-1))):
            self._add_points(row, value, observed)
        self._add_points("count", torch.ones_like(distance), observed)
        if scale is not None:
            pixels = torch.as_tensor(scale, dtype=torch.float64).cpu().reshape(-1, 1, 1)
            self._add_points("error_px", distance * pixels, observed)
            self._add_points("reference_px", reference * pixels, observed)
            self._add_points("count_px", torch.ones_like(distance), observed)
        if self.dtw:
            for item in range(len(target)):
                frames = valid[item]
                if frames.any():
                    seen = observed[item, frames]
                    costs = dtw_point_costs(recon[item, frames], torch.ones_like(seen), target[item, frames], seen)
                    self.points[_ROW["dtw"]] += costs
                    poses = [p[item, frames].numpy() for p in (recon, trivial, target)]
                    if scale is not None and center is not None:  # in the original's pixels
                        poses = [p * float(scale[item]) + np.asarray(center[item], dtype=np.float64) for p in poses]
                    self._add_pose_dtw(*poses, seen.numpy())
        self._add_handshapes(recon, target, observed)
        values = observed.sum() * skeleton.DIMS
        squares = [((poses - target).square().sum(-1) * observed).sum() for poses in (recon, trivial)]
        self.squared += torch.stack([*squares, values.double()])
        self._add_jitter(recon, target, observed)
        self.frames += valid.sum()
        if codes is not None:
            frame_codes = codes.detach().cpu()[valid].reshape(-1)
            self.codes += torch.bincount(frame_codes, minlength=self.codebook_size)[: self.codebook_size]

    def _add_pose_dtw(self, recon: np.ndarray, trivial: np.ndarray, target: np.ndarray, observed: np.ndarray) -> None:
        """Add one pose's DTWp and nDTWp, of the model and of the trivial reference (both predict every point)."""
        every = np.ones_like(observed)
        scores = [metric(hyp, every, target, observed) for metric in (dtwp, ndtwp) for hyp in (recon, trivial)]
        self.pose_dtw += torch.tensor([*scores, 1.0], dtype=torch.float64)

    def _add_handshapes(self, recon: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> None:
        for i, hand in enumerate(HANDS):
            wrist = skeleton.PARTS[hand].start
            fingers = slice(wrist + 1, skeleton.PARTS[hand].stop)
            seen = observed[..., fingers] & observed[..., wrist, None]
            shape = target[..., fingers, :] - target[..., wrist, None, :]
            error = (recon[..., fingers, :] - recon[..., wrist, None, :] - shape).norm(dim=-1)
            reference = (shape - trivial_reference(shape, seen)).norm(dim=-1)
            self.hands[i] += torch.stack([(error * seen).sum(), (reference * seen).sum(), seen.sum().double()])

    def _add_jitter(self, recon: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> None:
        if target.shape[1] < 3:
            return
        seen3 = observed[:, 2:] & observed[:, 1:-1] & observed[:, :-2]
        accel = [(p[:, 2:] - 2 * p[:, 1:-1] + p[:, :-2]).norm(dim=-1)[seen3].sum() for p in (recon, target, recon - target)]
        self.jitter += torch.stack([*accel, seen3.sum().double()])

    def part_sums(self, row: str = "error") -> dict[str, float]:
        """Per part (and ``all``), the accumulated ``row`` sum (one of POINT_ROWS): what one pose adds to a part."""
        return {scope: float(self.points[_ROW[row], points].sum()) for scope, points in SCOPES.items()}

    def point_ratios(self, row: str = "error") -> np.ndarray:
        """Per point (178,), the ``row`` sum (error, motion or dtw) over the trivial reference's (NaN if unseen)."""
        reference = self.points[_ROW["reference"]]
        ratios = self.points[_ROW[row]] / reference.where(reference > 0, torch.tensor(math.nan, dtype=torch.float64))
        return ratios.numpy()

    def _parts(self) -> dict[str, float]:
        result: dict[str, float] = {}
        for scope, points in SCOPES.items():
            sums = dict(zip(POINT_ROWS, self.points[:, points].sum(1).tolist()))
            count = max(sums["count"], 1.0)
            values = {"error": sums["error"] / count, "reference": sums["reference"] / count,
                      "ratio": _ratio(sums["error"], sums["reference"]), "motion": sums["motion"] / count,
                      "ratio_motion": _ratio(sums["motion"], sums["reference"])}
            if self.dtw:
                values.update(dtw=sums["dtw"] / count, ratio_dtw=_ratio(sums["dtw"], sums["reference"]))
            if sums["count_px"] > 0:
                values.update(error_px=sums["error_px"] / sums["count_px"],
                              reference_px=sums["reference_px"] / sums["count_px"])
            result.update({metric_name(kind, scope): value for kind, value in values.items()})
        for (error, reference, count), hand in zip(self.hands.tolist(), HANDS):
            values = {"handshape": error / max(count, 1.0), "reference_handshape": reference / max(count, 1.0),
                      "ratio_handshape": _ratio(error, reference)}
            result.update({metric_name(kind, hand): value for kind, value in values.items()})
        return result

    def compute(self) -> dict[str, float]:
        """Per-part errors and references, their ratios, MSE, jitter, codebook use, bits per frame, compression."""
        squared, reference_squared, values = self.squared.tolist()
        result: dict[str, float] = {"mse": squared / max(values, 1), "frames": float(self.frames)}
        reference = result[metric_name("reference", "mse")] = reference_squared / max(values, 1)
        result[metric_name("ratio", "mse")] = _ratio(result["mse"], reference)
        result.update(self._parts())
        jitter, jitter_target, accel_error, count = self.jitter.tolist()
        result["jitter"] = jitter / max(count, 1)
        result["jitter_target"] = jitter_target / max(count, 1)
        result["ratio_jitter"] = _ratio(result["jitter"], result["jitter_target"])
        result["accel_error"] = accel_error / max(count, 1)
        result["ratio_accel"] = _ratio(result["accel_error"], result["jitter_target"])
        if self.dtw:
            sums = dict(zip(POSE_ROWS, self.pose_dtw.tolist()))
            for metric in ("dtwp", "ndtwp"):
                reference = metric_name("reference", metric)
                result[metric] = sums[metric] / max(sums["poses"], 1.0)
                result[reference] = sums[reference] / max(sums["poses"], 1.0)
                result[metric_name("ratio", metric)] = _ratio(sums[metric], sums[reference])
        result.update(codebook_stats(self.codes))
        result["bits_per_frame"] = self.bits_per_frame
        result["compression_ratio"] = FLOAT16_BITS_PER_FRAME / self.bits_per_frame
        return result


def metrics_table(result: dict[str, float], codebook_size: int) -> list[dict[str, float | str]]:
    """Flat rows ``{metric, model, reference, ratio}`` of a :meth:`ReconstructionMetrics.compute` result.

    References: the trivial reference for errors, MSE, DTWp and nDTWp, the original's acceleration for jitter and
    acceleration error, every code used
    (utilization 1, perplexity ``codebook_size``) for the codebook, float16 poses for bits per frame.
    """
    pairs = [("mse", metric_name("reference", "mse"))]
    for kind in ("error", "motion", "dtw", "error_px"):
        reference = "reference_px" if kind == "error_px" else "reference"
        pairs += [(metric_name(kind, part), metric_name(reference, part)) for part in skeleton.PARTS]
    pairs += [(metric_name("handshape", h), metric_name("reference_handshape", h)) for h in HANDS]
    pairs += [(metric, metric_name("reference", metric)) for metric in ("dtwp", "ndtwp")]
    rows = [(metric, result[metric], result[reference]) for metric, reference in pairs if metric in result]
    rows += [
        ("jitter", result["jitter"], result["jitter_target"]),
        ("accel_error", result["accel_error"], result["jitter_target"]),
        ("codebook_utilization", result["codebook_utilization"], 1.0),
        ("perplexity", result["perplexity"], float(codebook_size)),
        ("bits_per_frame", result["bits_per_frame"], float(FLOAT16_BITS_PER_FRAME)),
    ]
    return [
        {"metric": metric, "model": float(model), "reference": float(reference), "ratio": _ratio(model, reference)}
        for metric, model, reference in rows
    ]
