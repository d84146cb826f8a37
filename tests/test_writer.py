"""The writer: every record type read back with TensorBoard's EventAccumulator; rank 0 only."""

import glob
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diagnostics.writer import Writer

KEEP_ALL = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0, "compressedHistograms": 0}


def read(run_dir):
    ea = EventAccumulator(str(run_dir), size_guidance=KEEP_ALL)
    ea.Reload()
    return ea


def test_histogram_round_trip_with_under_and_overflow(tmp_path):
    # Edges 0..4 (4 bins), counts: 1 under, 2 in [0, 1), 0, 0, 0, 1 over: [-5, .1, .1, 9].
    with Writer(tmp_path) as w:
        w.histogram("act/M/l/hist", np.array([1, 2, 0, 0, 0, 1]), np.arange(5.0), 3)
        w.histogram("act/M/l/none", torch.tensor([0.0, 4, 0, 0, 0, 0]), np.arange(5.0), 4)
    ea = read(tmp_path)
    (ev,) = ea.Histograms("act/M/l/hist")
    h = ev.histogram_value
    assert ev.step == 3 and h.num == 4
    # Buckets are (previous limit, limit]: the underflow gets its own bucket below edge 0.
    assert list(h.bucket_limit) == [-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert list(h.bucket) == [0, 1, 2, 0, 0, 0, 1]
    assert sum(h.bucket) == 4
    (ev2,) = ea.Histograms("act/M/l/none")
    assert ev2.histogram_value.num == 4 and ev2.histogram_value.bucket[1] == 4
    with Writer(tmp_path / "bad") as w, pytest.raises(ValueError):
        w.histogram("x", [1, 2], np.arange(5.0), 0)


def test_scalars_image_text_and_cost(tmp_path):
    img = np.zeros((6, 4, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    with Writer(tmp_path) as w:
        with w.cost("act"):
            w.scalars({"act/M/mean": torch.tensor(1.5), "act/M/std": 2.0}, 7)
            w.image("act/M/colorful", img, 7)
        w.scalar("loss/G", torch.tensor(0.25), 8)
        w.text("diagnostics/cost", "    a table", 8)
        assert w.bytes["act"] > 0 and w.seconds["act"] > 0
        assert "act" in w.cost_report()
    # bytes are counted as events are added (no flush per cost block): together with the file
    # header event they are exactly the file's size
    (path,) = tmp_path.glob("events.out.tfevents.*")
    data = path.read_bytes()
    header = 16 + int.from_bytes(data[:8], "little")  # the first record: the file version
    assert sum(w.bytes.values()) + header == len(data)
    ea = read(tmp_path)
    assert [(e.step, e.value) for e in ea.Scalars("act/M/mean")] == [(7, 1.5)]
    assert ea.Scalars("act/M/std")[0].value == 2.0
    assert ea.Scalars("loss/G")[0].value == 0.25
    (im,) = ea.Images("act/M/colorful")
    dec = np.asarray(Image.open(io.BytesIO(im.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(dec, img)
    (t,) = ea.Tensors("diagnostics/cost/text_summary")
    assert b"a table" in t.tensor_proto.string_val[0]
    with Writer(tmp_path / "bad") as w, pytest.raises(ValueError):
        w.image("x", np.zeros((4, 4), np.float32), 0)


def test_only_rank_zero_writes(tmp_path):
    w1 = Writer(tmp_path / "r", rank=1)
    w1.scalar("a", 1.0, 0)
    w1.histogram("h", [0, 1, 0], [0.0, 1.0], 0)
    w1.close()
    assert not (tmp_path / "r").exists() or not glob.glob(str(tmp_path / "r" / "events.*"))


def test_fast_record_checksums_are_tensorboards(tmp_path):
    """The C checksum (google-crc32c) gives TensorBoard's own masked CRC-32C: every record of a
    written file checks out under TensorBoard's pure-Python function, and is read back."""
    import struct

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    from diagnostics.writer import use_fast_crc

    assert use_fast_crc()  # google-crc32c is a dependency: the fast path must be in effect
    fast = record_writer.masked_crc32c
    assert fast is not masked_crc32c and fast.fieldscope_c
    rng = np.random.default_rng(0)
    for n in (0, 1, 9, 1000, 70_001):
        data = rng.bytes(n)
        assert fast(data) == masked_crc32c(data), n
    with Writer(tmp_path) as w:
        for k in range(3):
            w.scalar("loss", 0.5 * k, k)
            w.histogram("h", rng.integers(0, 9, 12), np.arange(11.0), k)
            w.image("img", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), k)
    (path,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    raw, pos, n_records = open(path, "rb").read(), 0, 0
    while pos < len(raw):  # TFRecord: length, crc(length), data, crc(data)
        header = raw[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[pos + 8 : pos + 12])[0] == masked_crc32c(header)
        data = raw[pos + 12 : pos + 12 + length]
        assert struct.unpack("<I", raw[pos + 12 + length : pos + 16 + length])[0] == (
            masked_crc32c(data)
        )
        pos += 16 + length
        n_records += 1
    assert n_records >= 10  # file version + 3 x (scalar, histogram, image)
    ea = read(tmp_path)
    assert [e.value for e in ea.Scalars("loss")] == [0.0, 0.5, 1.0]
    assert len(ea.Images("img")) == 3
