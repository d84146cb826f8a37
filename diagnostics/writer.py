"""The writer: the only code in the project that touches TensorBoard.

Everything that reaches an event file goes through :class:`Writer`. It writes only on rank 0
(other ranks get a writer whose methods do nothing), converts device tensors to host values
exactly once per call, and keeps a per-diagnostic account of time spent and bytes written
(``with writer.cost("act"):``), reported at the end of a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch


def use_fast_crc() -> bool:
    """Checksum TensorBoard records in C; True if that is in effect (process-wide, idempotent).

    Without TensorFlow, TensorBoard's record writer computes each record's masked CRC-32C in pure
    Python, about 0.3 us per byte: 27 ms for one 85 KB write of histograms, more for images,
    paid on the training thread at every write (``benchmarks/diagnostics_overhead.py``). With
    ``google-crc32c`` (a dependency) the same checksum is computed in C and the files are byte for
    byte the same (``tests/test_writer.py``). Any ``SummaryWriter`` in the process gains.
    ``FIELDSCOPE_PY_CRC=1`` keeps TensorBoard's own (benchmarks measure both).
    """
    if os.environ.get("FIELDSCOPE_PY_CRC") == "1":
        return False
    try:
        import google_crc32c
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if getattr(record_writer.masked_crc32c, "fieldscope_c", False):
        return True
    if google_crc32c.implementation != "c":
        return False  # its pure-Python fallback would be no faster

    def masked_crc32c(data: bytes) -> int:
        crc = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF  # TFRecord's mask

    masked_crc32c.fieldscope_c = True
    record_writer.masked_crc32c = masked_crc32c
    return True


def _to_float(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().to("cpu", torch.float64))
    return float(value)


@dataclasses.dataclass(frozen=True)
class _HistLayout:
    edges: list[float]
    lo: float  # where the underflow bucket starts
    hi: float  # the last limit (overflow bucket's top)
    limits: list[float]  # edges, then hi
    centres: np.ndarray  # (n + 2,) underflow, bins, overflow
    centres_sq: np.ndarray


class Writer:
    """Rank-aware wrapper around ``SummaryWriter`` with cost accounting.

    Args:
        log_dir: directory of the event file (the run directory).
        rank: process rank; only rank 0 writes.
        purge_step: on resume, TensorBoard hides events at or after this step (no duplicates).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        rank: int = 0,
        purge_step: int | None = None,
        flush_secs: int = 30,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.rank = rank
        self.is_writer = rank == 0
        self._tb = None
        if self.is_writer:
            from torch.utils.tensorboard import SummaryWriter

            use_fast_crc()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(
                str(self.log_dir), purge_step=purge_step, flush_secs=flush_secs, max_queue=1000
            )
        self.seconds: dict[str, float] = defaultdict(float)
        self.bytes: dict[str, int] = defaultdict(int)
        # Host seconds on the training step (hooks), set by Diagnostics: the one cost report
        # shows them beside the write costs
        self.record_seconds: dict[str, float] = {}
        self._current: list[str] = []
        self._pending = 0  # bytes of the events added since the last mark
        self._layouts: dict[bytes, _HistLayout] = {}
        if self.is_writer:
            self._count_events()

    # ----------------------------------------------------------------------------- accounting
    @contextlib.contextmanager
    def cost(self, name: str) -> Iterator[None]:
        """Attribute the time spent and the bytes written inside the block to ``name``."""
        self._mark()
        self._current.append(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._mark()
            self.seconds[name] += time.perf_counter() - t0
            self._current.pop()

    def _count_events(self) -> None:
        """Count the bytes of every event as the file writer takes it (its serialized size plus
        the 16 bytes of TFRecord framing), so the accounting never flushes the event file: a
        flush per cost block waited for the writer thread on the training step."""
        ew = self._tb._get_file_writer().event_writer
        add = ew.add_event

        def counted(event) -> None:
            self._pending += event.ByteSize() + 16
            add(event)

        ew.add_event = counted

    def _mark(self) -> None:
        """Attribute the event bytes added since the last mark to the innermost open block."""
        if not self.is_writer:
            return
        self.bytes[self._current[-1] if self._current else "other"] += self._pending
        self._pending = 0

    def cost_report(self) -> str:
        """The run's one cost table: per diagnostic, host seconds on the training step (hooks),
        seconds in writes and MB written."""
        names = sorted(set(self.seconds) | set(self.bytes) | set(self.record_seconds))
        lines = [f"{'diagnostic':<20} {'record s':>10} {'write s':>10} {'MB written':>12}"]
        for n in names:
            lines.append(
                f"{n:<20} {self.record_seconds.get(n, 0.0):>10.3f} {self.seconds.get(n, 0.0):>10.3f}"
                f" {self.bytes.get(n, 0) / 1e6:>12.3f}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------------------- records
    def scalar(self, tag: str, value, step: int) -> None:
        """One scalar (a tensor is copied to the host here, once)."""
        if not self.is_writer:
            return
        self._tb.add_scalar(tag, _to_float(value), step)

    def scalars(self, values: Mapping[str, object], step: int) -> None:
        """Many scalars under their own tags (not ``add_scalars``, which makes extra runs).

        Tensors are stacked and copied to the host in one transfer.
        """
        if not self.is_writer or not values:
            return
        tags = list(values)
        tens = [(i, v) for i, v in enumerate(values.values()) if isinstance(v, torch.Tensor)]
        host = [None] * len(tags)
        if tens:
            stacked = torch.stack([v.detach().reshape(()).to(torch.float64) for _, v in tens])
            for (i, _), x in zip(tens, stacked.cpu().tolist(), strict=True):
                host[i] = x
        for i, v in enumerate(values.values()):
            if host[i] is None:
                host[i] = float(v)
        for tag, x in zip(tags, host, strict=True):
            self._tb.add_scalar(tag, x, step)

    def histogram(
        self,
        tag: str,
        counts,
        edges,
        step: int,
        *,
        vmin: float | None = None,
        vmax: float | None = None,
        total: float | None = None,
        sum_squares: float | None = None,
    ) -> None:
        """A pre-binned histogram (``add_histogram_raw``).

        ``counts`` has ``len(edges) + 1`` entries: underflow, one per bin, overflow. Under- and
        overflow are written as bins reaching to ``vmin``/``vmax`` (or a bin width beyond the
        edges) so no value is silently dropped. ``total``/``sum_squares`` default to estimates
        from bin centres.
        """
        if not self.is_writer:
            return
        counts = np.asarray(
            counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64
        )
        edges = np.asarray(edges, dtype=np.float64)
        if counts.shape != (len(edges) + 1,):
            raise ValueError(
                f"histogram {tag!r}: expected {len(edges) + 1} counts (under, bins, over), got {counts.shape}"
            )
        lay = self._layout(edges)
        lo = min(vmin, lay.lo) if vmin is not None else lay.lo
        hi = max(vmax, lay.hi) if vmax is not None else lay.hi
        # TensorBoard buckets are (previous limit, limit]; the first limit is the lowest edge.
        limits = lay.limits if vmax is None else lay.limits[:-1] + [hi]
        bucket = counts.tolist()
        if bucket[0] > 0:  # underflow: a bucket from lo up to the first edge
            limits = [lo] + limits
            bucket = [0.0] + bucket
        if total is None:
            total = float(counts @ lay.centres)
        if sum_squares is None:
            sum_squares = float(counts @ lay.centres_sq)
        # Range of the occupied bins: count i (1..n) spans edges[i-1]..edges[i]; under/overflow
        # reach to lo/hi.
        nz = np.flatnonzero(counts)
        mn = mx = 0.0
        if len(nz):
            first, last = int(nz[0]), int(nz[-1])
            mn = lay.edges[first - 1] if first > 0 else lo
            mx = lay.edges[last] if last < len(counts) - 1 else hi
        self._tb.add_histogram_raw(
            tag,
            min=float(vmin if vmin is not None else mn),
            max=float(vmax if vmax is not None else mx),
            num=float(counts.sum()),
            sum=float(total),
            sum_squares=float(sum_squares),
            bucket_limits=limits,
            bucket_counts=bucket,
            global_step=step,
        )

    def _layout(self, edges: np.ndarray) -> _HistLayout:
        """Bucket limits and bin centres of these edges (cached: a run writes the same few)."""
        key = edges.tobytes()
        lay = self._layouts.get(key)
        if lay is None:
            width = edges[1] - edges[0] if len(edges) > 1 else 1.0
            centres = np.concatenate(
                [[edges[0] - width / 2], (edges[:-1] + edges[1:]) / 2, [edges[-1] + width / 2]]
            )
            lo, hi = float(edges[0] - width), float(edges[-1] + width)
            lay = _HistLayout(
                edges=edges.tolist(),
                lo=lo,
                hi=hi,
                limits=edges.tolist() + [hi],
                centres=centres,
                centres_sq=centres**2,
            )
            self._layouts[key] = lay
        return lay

    def image(self, tag: str, img: np.ndarray, step: int) -> None:
        """An RGB(A) uint8 image, shape (H, W, 3|4)."""
        if not self.is_writer:
            return
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise ValueError(
                f"image {tag!r}: expected uint8 (H, W, 3|4), got {img.dtype} {img.shape}"
            )
        # Encoded here, not by add_image: that path converts uint8 to float32, rescales and casts
        # back, then compresses at zlib level 6; charts with flat colour areas compress almost as
        # well at level 3 in two thirds of the time (the image writes dominate a default write).
        import io

        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=3)
        h, w, c = img.shape
        image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=buf.getvalue())
        self._tb._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, image=image)]), step
        )

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib figure, rendered once through Agg and closed."""
        if not self.is_writer:
            import matplotlib.pyplot as plt

            plt.close(fig)
            return
        from .render import figure_to_array

        img = figure_to_array(fig)
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.image(tag, img, step)

    def text(self, tag: str, text: str, step: int) -> None:
        """A markdown text entry (indent by 4 spaces to keep a table's columns)."""
        if not self.is_writer:
            return
        self._tb.add_text(tag, text, step)

    def embedding(
        self,
        mat,
        *,
        metadata=None,
        label_img=None,
        step: int = 0,
        tag: str = "default",
        metadata_header=None,
        keep: int = 3,
    ) -> None:
        """Projector export: ``log_dir/projector/<tag>_<step>/`` holds ``tensors.tsv``,
        ``metadata.tsv`` and ``sprite.png``; ``log_dir/projector_config.pbtxt`` lists the newest
        ``keep`` exports per tag, newest first (the projector opens the first), with their shapes.

        TensorBoard's projector reads every listed tensor before its tab appears, so a long run's
        hundred exports would delay it; older exports stay on disk (and in ``embeddings/*.nc``).
        ``SummaryWriter.add_embedding`` put each under ``<step>/<tag with %2f>/`` and listed all.
        """
        if not self.is_writer:
            return
        from google.protobuf import text_format
        from PIL import Image
        from tensorboard.plugins.projector import projector_config_pb2

        # mat: (n, d); label_img: (n, 3, s, s) floats in [0, 1]
        x = np.asarray(mat.detach().cpu() if isinstance(mat, torch.Tensor) else mat, np.float32)
        if x.ndim != 2:
            raise ValueError(f"embedding {tag!r}: expected (n, d), got {x.shape}")
        name = f"{tag.replace('/', '_')}_{int(step):08d}"
        d = self.log_dir / "projector" / name
        d.mkdir(parents=True, exist_ok=True)
        np.savetxt(d / "tensors.tsv", x, delimiter="\t", fmt="%.6g")
        rel = f"projector/{name}"
        emb = projector_config_pb2.EmbeddingInfo(
            tensor_name=f"{tag}:{int(step):08d}", tensor_path=f"{rel}/tensors.tsv"
        )
        emb.tensor_shape.extend(list(x.shape))
        if metadata is not None:
            rows = [metadata_header] if metadata_header else []
            rows += [r if isinstance(r, list | tuple) else [r] for r in metadata]
            lines = ["\t".join(str(c).replace("\t", " ") for c in r) for r in rows]
            (d / "metadata.tsv").write_text("\n".join(lines) + "\n")
            emb.metadata_path = f"{rel}/metadata.tsv"
        if label_img is not None:
            im = (
                label_img.detach().cpu().numpy()
                if isinstance(label_img, torch.Tensor)
                else label_img
            )
            im = np.asarray(im, np.float32)  # (n, 3, s, s)
            n, _, side, _ = im.shape
            k = int(np.ceil(np.sqrt(n)))
            sheet = np.zeros((k * side, k * side, 3), np.uint8)
            for i in range(n):
                r, c = divmod(i, k)
                tile = np.clip(im[i].transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
                sheet[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile
            Image.fromarray(sheet).save(d / "sprite.png")
            emb.sprite.image_path = f"{rel}/sprite.png"
            emb.sprite.single_image_dim.extend([side, side])
        cfg_path = self.log_dir / "projector_config.pbtxt"
        config = projector_config_pb2.ProjectorConfig()
        if cfg_path.is_file():
            text_format.Parse(cfg_path.read_text(), config)
        kept = [e for e in config.embeddings if e.tensor_name != emb.tensor_name]
        same = [e for e in kept if e.tensor_name.rsplit(":", 1)[0] == tag][: max(keep - 1, 0)]
        other = [e for e in kept if e.tensor_name.rsplit(":", 1)[0] != tag]
        new = projector_config_pb2.ProjectorConfig()
        new.embeddings.extend([emb, *same, *other])
        tmp = cfg_path.with_name(cfg_path.name + ".tmp")
        tmp.write_text(text_format.MessageToString(new))
        os.replace(tmp, cfg_path)

    def custom_scalars(self, layout: Mapping[str, Mapping[str, list]]) -> None:
        """The Custom Scalars dashboard layout: ``{category: {chart: ["Multiline", [regex, ...]]}}``
        (``"Margin"`` charts take [value, lower, upper] tags). Categories show in the given order."""
        if not self.is_writer:
            return
        self._tb.add_custom_scalars({k: dict(v) for k, v in layout.items()})

    def hparams(self, hparams: Mapping[str, object], metrics: list[str]) -> None:
        """HParams records in this run's own event file: the run's configuration (``hparams``,
        values bool, number or str; anything else as its str) and the scalar tags whose last
        values the HParams tab shows as metrics. (``SummaryWriter.add_hparams`` would make a
        second run in a sub-directory.) :meth:`hparams_end` marks the session finished."""
        if not self.is_writer:
            return
        from google.protobuf import struct_pb2
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        values, infos = {}, []
        for k, v in hparams.items():
            if isinstance(v, bool):
                values[str(k)] = struct_pb2.Value(bool_value=v)
                kind = api_pb2.DATA_TYPE_BOOL
            elif isinstance(v, int | float):
                values[str(k)] = struct_pb2.Value(number_value=float(v))
                kind = api_pb2.DATA_TYPE_FLOAT64
            else:
                values[str(k)] = struct_pb2.Value(string_value=str(v))
                kind = api_pb2.DATA_TYPE_STRING
            infos.append(api_pb2.HParamInfo(name=str(k), type=kind))
        experiment = api_pb2.Experiment(
            hparam_infos=infos,
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in metrics],
        )
        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for k, v in values.items():
            start.hparams[k].CopyFrom(v)
        self._hparams_record(
            "_hparams_/experiment", plugin_data_pb2.HParamsPluginData(experiment=experiment)
        )
        self._hparams_record(
            "_hparams_/session_start_info",
            plugin_data_pb2.HParamsPluginData(session_start_info=start),
        )

    def hparams_end(self, status: str = "success") -> None:
        """Close the HParams session: ``success``, ``failure``, ``running`` or ``unknown``."""
        if not self.is_writer:
            return
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        code = {
            "success": api_pb2.STATUS_SUCCESS,
            "failure": api_pb2.STATUS_FAILURE,
            "running": api_pb2.STATUS_RUNNING,
        }.get(status, api_pb2.STATUS_UNKNOWN)
        end = plugin_data_pb2.SessionEndInfo(status=code, end_time_secs=time.time())
        self._hparams_record(
            "_hparams_/session_end_info", plugin_data_pb2.HParamsPluginData(session_end_info=end)
        )

    def _hparams_record(self, tag: str, data) -> None:
        # the layout of tensorboard.plugins.hparams.summary (which needs TensorFlow): plugin
        # metadata holding the record, on an empty string tensor
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.types_pb2 import DT_STRING
        from tensorboard.plugins.hparams import metadata

        data.version = metadata.PLUGIN_DATA_VERSION
        meta = metadata.create_summary_metadata(data)
        tensor = TensorProto(dtype=DT_STRING, string_val=[b""])
        tensor.tensor_shape.SetInParent()
        self._tb._get_file_writer().add_summary(
            Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])
        )

    def flush(self) -> None:
        """Write pending events to disk."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Account the last bytes, close the event file; later calls write nothing."""
        if self._tb is not None:
            self._mark()
            self._tb.close()
            self._tb = None
            self.is_writer = False

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
