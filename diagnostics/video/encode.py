"""MP4 writing: ffmpeg settings, frame hold, streaming to imageio-ffmpeg under a temporary
name renamed when complete."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..rundir import commit


@dataclass(frozen=True)
class Encoding:
    """ffmpeg settings; part of a video's up-to-date check."""

    fps: float = 12
    # a few snapshots at 12 fps flash past in under a second: every frame is held (repeated) so
    # that a video lasts at least this long
    min_seconds: float = 5.0
    # superfast/23 encoded 1080p summary frames at 26 fps on one loaded core (veryfast/18 with
    # tune=animation: 7 fps, the bottleneck of the whole pipeline) with the same mean error
    crf: int = 23
    preset: str = "superfast"


def frame_hold(n_frames: int, enc: Encoding) -> int:
    """How many times each of ``n_frames`` frames is sent so the video lasts >= ``enc.min_seconds``."""
    return max(1, int(np.ceil(enc.min_seconds * enc.fps / max(n_frames, 1) - 1e-9)))


def encode_video(
    frames: Iterable[np.ndarray],
    path: str | os.PathLike,
    enc: Encoding = Encoding(),
    *,
    hold: int = 1,
) -> int:
    """Stream RGB frames to an H.264 MP4 at ``path``, each sent ``hold`` times; written under a
    temporary name, renamed when done.

    Returns the number of frames written. If the frame source raises, nothing is left at
    ``path`` or the temporary name and the exception propagates.
    """
    import imageio_ffmpeg

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.mp4")
    writer = None
    size = None
    n = 0
    try:
        for frame in frames:
            # frame: (H, W, 3) uint8 with even sides (yuv420p)
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame {n}: expected (H, W, 3) uint8, got {frame.shape} {frame.dtype}"
                )
            if writer is None:
                size = frame.shape[:2]
                if size[0] % 2 or size[1] % 2:
                    raise ValueError(f"frame size {size} has an odd side; yuv420p needs even sides")
                writer = imageio_ffmpeg.write_frames(
                    str(tmp),
                    (size[1], size[0]),
                    fps=enc.fps,
                    codec="libx264",
                    pix_fmt_out="yuv420p",
                    quality=None,
                    macro_block_size=1,  # sides are even already; 16 would make ffmpeg rescale
                    output_params=["-crf", str(enc.crf), "-preset", enc.preset],
                )
                writer.send(None)
            elif frame.shape[:2] != size:
                raise ValueError(f"frame {n} is {frame.shape[:2]}, the video is {size}")
            frame = np.ascontiguousarray(frame)
            for _ in range(hold):
                writer.send(frame)
                n += 1
        if writer is None:
            raise ValueError(f"{final}: no frames to write")
        writer.close()
        writer = None
        commit(tmp, final)
        return n
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
