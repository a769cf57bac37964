"""The metrics' names, declared once: ``<kind>_<scope>`` (``ratio_motion_face``, ``reference_handshape_left_hand``);
what each one means is in :mod:`sign_vq.evaluation.metrics`."""

from __future__ import annotations

from collections.abc import Iterable

from sign_vq.poses import skeleton

HANDS = ("left_hand", "right_hand")
SCOPES = {**skeleton.PARTS, "all": slice(0, skeleton.NUM_POINTS)}  # the parts and every point ("overall")
PART_KINDS = ("error", "reference", "ratio", "motion", "ratio_motion", "dtw", "ratio_dtw", "error_px", "reference_px")
HAND_KINDS = ("handshape", "reference_handshape", "ratio_handshape")
POSE_METRICS = ("mse", "dtwp", "ndtwp")  # whole-pose metrics that have a ``reference_`` and a ``ratio_``


def metric_name(kind: str, scope: str) -> str:
    """A metric's name: ``kind`` (PART_KINDS) of a part or ``all``, a hand's (HAND_KINDS), or the reference or ratio
    of a whole-pose metric (``metric_name("ratio", "dtwp")``); a name the metrics never write is a KeyError."""
    if kind in HAND_KINDS:
        scopes: tuple[str, ...] = HANDS
    elif kind in ("reference", "ratio"):
        scopes = (*SCOPES, *POSE_METRICS)
    else:
        scopes = tuple(SCOPES) if kind in PART_KINDS else ()
    if scope not in scopes:
        raise KeyError(f"no metric {kind!r} of {scope!r}")
    return f"{kind}_{scope}"


def metric_names(kinds: tuple[str, ...], scopes: Iterable[str]) -> tuple[str, ...]:
    """Every ``metric_name(kind, scope)``, scope by scope."""
    return tuple(metric_name(kind, scope) for scope in scopes for kind in kinds)


# What training validation logs (``val/<name>``).
VALIDATION = (
    "codebook_utilization", "perplexity", "mse", "ratio_jitter", "ratio_accel",
    *metric_names(("ratio", "ratio_motion"), ("all",)),
    *metric_names(("error", "ratio", "ratio_motion"), skeleton.PARTS),
    *metric_names(("ratio_handshape",), HANDS),
)
