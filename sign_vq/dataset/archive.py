"""The training archive: normalize shards joined into one pose zip with a deterministic train/validation split
(each pose's split from a hash of its id)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sign_vq.config import default
from sign_vq.errors import UserError
from sign_vq.formats.posezip import PoseZip
from sign_vq.formats.ziplayout import SPLITS, id_key
from sign_vq.formats.zipwriter import PoseZipWriter

log = logging.getLogger(__name__)

def split_of(pose_id: str, val_fraction: float) -> str:
    """`val` for a stable ``val_fraction`` of ids (by a hash of the id, never by file order), else `train`."""
    return "val" if id_key(pose_id) / 2**64 < val_fraction else "train"


def split_codes(keys: np.ndarray, val_fraction: float) -> np.ndarray:
    """:func:`split_of` for the id keys of a pose zip at once, as codes of :data:`~sign_vq.formats.ziplayout.SPLITS`."""
    val = np.asarray(keys).astype(np.float64) / 2**64 < val_fraction
    return np.where(val, SPLITS.index("val"), SPLITS.index("train")).astype(np.uint8)


def _refuse_overwriting_an_input(shards: list[Path], output: Path) -> None:
    """A UserError if ``output`` is one of ``shards`` (the archive would replace its own input)."""
    for shard in shards:
        if output.exists() and shard.exists() and output.samefile(shard):  # also through links
            raise UserError(f"--output {output} is also the input shard {shard}; write the archive to another file")


def build_archive(shards: list[Path], output: Path, val_fraction: float = default("archive.val_fraction")) -> dict:
    """Write ``output`` from ``shards`` (each checked pose by pose against its index first); returns counts per
    split."""
    _refuse_overwriting_an_input(shards, output)
    counts = {"train": 0, "val": 0}
    frames = {"train": 0, "val": 0}
    with PoseZipWriter(output) as writer:
        for shard in tqdm(shards, desc="archive", unit="shard", disable=None):
            source = PoseZip(shard)
            source.verify()  # a forged index (frames, CRC, offsets, ids) would be copied into the archive as it is
            codes = split_codes(source.columns["key"], val_fraction)
            writer.append_zip(source, codes)
            for split in counts:
                chosen = codes == SPLITS.index(split)
                counts[split] += int(chosen.sum())
                frames[split] += int(source.frames[chosen].sum(dtype=np.int64))
        writer.close(val_fraction=val_fraction, counts=counts, frames=frames, shards=[str(s) for s in shards])
    log.info("%s: %d train / %d val poses (%d / %d frames)", output, counts["train"], counts["val"], frames["train"], frames["val"])
    return counts
