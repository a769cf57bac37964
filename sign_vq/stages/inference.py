"""Inference with a trained model: `sign-vq encode | decode | reconstruct | repair`, and the same as a Python API
(:func:`sign_vq.api.encode`, :func:`sign_vq.api.decode`; ``sign_vq.load/encode/decode``).

- ``encode``: codes of ``.pose`` files, folders, shards and archives: one codes corpus (``--output FILE.csv``, a row
  per pose, see :mod:`sign_vq.formats.corpus`) or one ``.npy`` per pose (integer codes, frames x codes per frame). A
  residual model (``model.quantizer: residual``) keeps the first k codes of a frame with ``--quantizers k`` (fewer
  bits, coarser poses); ``decode`` reads any 1 to all of them (codes per frame = the corpus' codes / length).
- ``decode``: one ``.pose`` per codes file or corpus row (canonical 178-point header). Codes carry no original
  coordinates, so the shoulder-normalized output is placed the way pose-format's ``normalize_pose_size`` does: a
  512 x 512 frame with the shoulder centre at (256, 256) and a shoulder width of 204.8 pixels
  (``(x + 1.25) * 204.8``).
- ``reconstruct``: a ``.pose`` with the input's frame count, fps and frame size, the 178 reduced points mapped back
  to the input's own coordinates (its shoulder centre and width); every point has confidence 1.
- ``repair``: the input's 178 reduced points as read (no wrist correction), observed points (finite confidence > 0)
  copied bit for bit with their confidence; only the missing points are filled from the reconstruction, with
  confidence :data:`sign_vq.api.FILLED_CONFIDENCE`.

Only the first person of a multi-person file is used. Poses longer than the model's ``max_frames`` are cut into
equal windows of at most that many frames (a function of the frame count only, so ``decode(encode(x))`` equals the
windowed reconstruction); windows of several poses share a forward pass (:func:`sign_vq.model.windows.windowed`).
``decode`` takes at most :data:`~sign_vq.formats.corpus.MAX_DECODE_FRAMES` frames at once. A folder input keeps its
relative paths under the output folder; a bad input is reported (naming the file) and skipped, and the command then
exits 2. Runs on CPU unless ``--device`` says otherwise; imports only the core dependencies (never Lightning, W&B or
video libraries). The work itself is :mod:`sign_vq.batch`.
"""

from __future__ import annotations

import argparse
import logging

from sign_vq.batch import Job, run_job
from sign_vq.errors import UserError
from sign_vq.model.checkpoint import load_on

log = logging.getLogger(__name__)
STAGES = ("encode", "decode", "reconstruct", "repair")


def run(args: argparse.Namespace) -> int:
    model = load_on(args.model, args.device)
    quantizers = getattr(args, "quantizers", None)
    model.kept(quantizers)  # one error before any input is read
    errors: list[str] = []
    job = Job(args.stage, args.inputs, args.output, getattr(args, "fps", None), quantizers)
    written = run_job(model, job, errors)
    log.info("%s: %d written to %s", args.stage, written, args.output)
    if errors:
        if len(errors) == 1:
            raise UserError(errors[0])
        for error in errors:
            log.error("%s", error)
        raise UserError(f"{len(errors)} inputs failed (first: {errors[0]})")
    return 0


if __name__ == "__main__":
    import sys

    from sign_vq.cli import main, run_module

    if len(sys.argv) > 1 and sys.argv[1] in STAGES:  # python -m sign_vq.stages.inference encode|decode|reconstruct|repair ...
        run_module(sys.argv.pop(1))
    sys.exit(main(sys.argv[1:]))
