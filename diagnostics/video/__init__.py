"""Videos of training, rendered from a run's snapshots after (or during) training.

``python -m diagnostics.video RUN [RUN ...] [--compare RUN ...]`` (``make video RUN=...``) writes every
video the run supports into ``RUN/videos/``:

==========================  =======================================================================
``weights_<model>_<param>``  one per weight matrix or kernel bank (:func:`picture_worthy`), at most
                             ``MAX_WEIGHT_VIDEOS`` (8) shared evenly over the models unless
                             ``--all-weights``; keras_weight_animator style: the tensor mapped to 2D
                             by :func:`weight_to_2d` (thin matrices folded into bands at about
                             16:9), upscaled by the largest integer nearest-neighbour factor (never
                             below 1) that keeps the width <= ``max_px`` (1920) and the height
                             <= ``max_px`` - 40 - 34 (header, colour bar), RdBu_r with fixed
                             symmetric limits +-max|w| over the whole sequence (``--per-frame``: the
                             limits of each frame, as the animator did), colour bar below.
                             Floating-point tensors only (not buffers such as num_batches_tracked).
``weights_small``            biases, scalars and other tensors too small for a picture: one line
                             plot each over the steps (a line per value up to 8 values, else
                             min / mean / max), y limits fixed over the run.
``slices_p<j>``              GAN: probe sample j, rows upsampled input / generated / truth /
                             difference, one column per variable (:func:`diagnostics.slices.slice_panel`);
                             field limits from meta ``clim``, difference limits meta ``diff_lim``
                             or else +-max|fake - truth| over the run; cells scaled to fit 1920 x 1080.
``act_colordim``             GAN: the colorful dimension of every hooked layer (``act_hist/...``),
                             drawn by :func:`diagnostics.render.colorful_panel` as in TensorBoard:
                             log1p(counts) of each snapshot's histogram as one column, bin 0 at the
                             bottom (under/overflow bins included), rows labelled with the bin edges,
                             columns with the steps, growing to the right frame by frame; future
                             columns grey; colour bar 0..max over the run per layer.
``summary``                  autoencoder: Brohan's 1920 x 1080 summary frame
                             (:func:`diagnostics.weightmaps.render_summary_frame`), neuron order from
                             the final snapshot (colour limits per run, also when compared).
==========================  =======================================================================

Frame layout: each run's panel (at least ``MIN_PANEL_W`` px wide) has a white header of ``HEADER`` (40) px, two text lines (shrunk or wrapped, never cut): the run label
(name and its distinguishing overrides) and ``step <N>  <title>``; the panel content follows. Panels
sit side by side left to right with ``PAD`` (4) px of grey between them, padded to even sides; with
N runs each panel gets (max_px - 4 (N - 1)) / N px of width. A single-run summary video is the bare
1920 x 1080 frame (no header); a compared one is N such frames under headers, side by side.

Comparison (``--compare b c``) renders the views all runs support into ``RUN/videos/compare_<b>_<c>/``
over the INTERSECTION of their snapshot steps, so every panel of a frame shows the same step; colour
limits are taken over all runs together. Each panel is labelled with its run name and the overrides
that distinguish it (present in it and not in every other run).

Every video lasts at least ``Encoding.min_seconds`` (5 s, ``--min-seconds``): with few snapshots each
frame is sent several times (:func:`frame_hold`). The first frame is the first snapshot (step 0, the
untrained state, in runs of both scripts).

Videos stream to ffmpeg (imageio-ffmpeg, libx264 superfast crf 23, yuv420p, 12 fps by default; no
PNG files) under a temporary name and are renamed
when complete; ``videos/.index.json`` records the snapshot steps and options of every finished video,
and a re-run skips those that are up to date. Frames render in ``--jobs`` worker processes
(forkserver, or spawn where unavailable), each reading its own snapshots.
"""

from ..weight_images import (  # noqa: F401 - re-exported
    GAP_RGB,
    fit_factor,
    layout_note,
    picture_worthy,
    weight_frame,
    weight_image,
    weight_to_2d,
)
from .base import (  # noqa: F401 - re-exported
    BACKGROUND,
    BAR,
    FRAME_H,
    HEADER,
    INDEX_FORMAT,
    INDEX_NAME,
    MAX_PX,
    MAX_WEIGHT_VIDEOS,
    MIN_PANEL_W,
    PAD,
    SMALL_LINES,
    VideoError,
    _safe,
    header,
    hstack_panels,
)
from .cli import build_parser, main  # noqa: F401 - re-exported
from .driver import _read_index, _signature, _write_index, render_runs  # noqa: F401
from .encode import Encoding, encode_video, frame_hold  # noqa: F401 - re-exported
from .frames import (  # noqa: F401 - re-exported
    _RENDERERS,
    Job,
    _pad_to,
    _render_colordim,
    _render_slices,
    _render_small,
    _render_summary,
    _render_weights,
)
from .parallel import (  # noqa: F401 - re-exported
    PRELOAD,
    _init_worker,
    _main_not_reimported,
    _render_task,
    iter_frames,
    mp_context,
    scan_runs,
)
from .plan import _plan_gan, _plan_summary, plan_jobs  # noqa: F401 - re-exported
from .runs import (  # noqa: F401 - re-exported
    Run,
    _labels,
    _load_keys,
    _run_identity,
    _scan_task,
    distinguishing_overrides,
    open_run,
    scan_snapshot,
)
from .weights import _evenly_per_model, _plan_small  # noqa: F401 - re-exported
