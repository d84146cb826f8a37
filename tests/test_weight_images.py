"""Live weight images read back from the event file: cells, colours and a fixed scale."""

import io

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from diagnostics.render import CMAPS, colormap_lut
from diagnostics.weight_images import GAP_RGB, WeightImages, weight_frame
from diagnostics.writer import Writer

FACTOR = 25  # 3 out x 2 in tiles of 3x(3*3): (11, 19) px, upscaled to fit 480 px
PIC_H, BAR_H = 11 * FACTOR, 34  # the picture, then the colour bar at the bottom


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3)
        self.head = MyLinear(4, 2)  # a subclass of nn.Linear is a linear layer too
        self.gain = nn.Linear(1, 1)  # one value: no picture


class MyLinear(nn.Linear):
    pass


def _model() -> Tiny:
    m = Tiny()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.conv.weight[0, 1, 1, 1, 1] = 1.0  # out 0, in 1, depth slice 1, row 1, column 1
        m.conv.weight[2, 0, 0, 2, 0] = -1.0  # out 2, in 0, depth slice 0, row 2, column 0
        m.head.weight[1, 3] = 0.5
    return m


def _images(run_dir, tag):
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    return {
        e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
        for e in acc.Images(tag)
    }, acc.Tags()["images"]


def _cell(img, row, col):
    # centre pixel of weight-image cell (row, col) by hand: tiles are kh=3 rows and 3 slices x 3
    # columns wide, one separator pixel apart -> tile pitch (4, 10)
    top = img.shape[0] - BAR_H - PIC_H  # title lines above (as many as the text needs)
    return tuple(img[top + row * FACTOR + FACTOR // 2, col * FACTOR + FACTOR // 2])


def test_single_plus_and_minus_land_in_their_cells_with_the_end_colours(tmp_path):
    model = _model()
    with Writer(tmp_path) as w:
        WeightImages({"M": model}, w).write(1)
    imgs, tags = _images(tmp_path, "weights_img/M/conv")
    assert {"weights_img/M/conv", "weights_img/M/head"} <= set(tags)
    assert not any("gain" in t or "bias" in t for t in tags)  # nothing flat is drawn
    img = imgs[1]
    lut = colormap_lut(CMAPS["weights"])
    # +1: out 0 (tile row 0), in 1 (tile column 1), slice 1, row 1, column 1 -> (1, 10 + 3 + 1)
    assert _cell(img, 1, 14) == tuple(lut[-1])
    # -1: out 2, in 0, slice 0, row 2, column 0 -> (2 * 4 + 2, 0)
    assert _cell(img, 10, 0) == tuple(lut[0])
    # zero weights in the middle of the diverging map, separators grey
    assert _cell(img, 0, 0) == tuple(lut[128])
    assert _cell(img, 3, 0) == GAP_RGB
    assert _cell(img, 0, 9) == GAP_RGB


def test_colour_scale_is_fixed_from_the_first_write(tmp_path):
    model = _model()
    with Writer(tmp_path) as w:
        logger = WeightImages({"M": model}, w, deltas=True)
        logger.write(1)
        with torch.no_grad():
            model.conv.weight.mul_(0.5)  # +0.5 and -0.5 now
        logger.write(2)
    imgs, tags = _images(tmp_path, "weights_img/M/conv")
    lut = colormap_lut(CMAPS["weights"])
    # +0.5 on the scale +-1 fixed at step 1: three quarters up the LUT, not its end
    assert _cell(imgs[2], 1, 14) == tuple(lut[int(0.75 * 255 + 0.5)])
    assert _cell(imgs[2], 10, 0) == tuple(lut[int(0.25 * 255 + 0.5)])
    # the colour bar under the picture (same limits) is pixel-identical between the writes
    bar = slice(-BAR_H, None)
    assert imgs[1].shape == imgs[2].shape
    assert (imgs[1][bar] == imgs[2][bar]).all()
    assert logger.lim["M/conv"] == 1.0
    # the change (+1 -> +0.5 is -0.5) on its own scale +-0.5: the blue end
    deltas, _ = _images(tmp_path, "weights_img_delta/M/conv")
    assert list(deltas) == [2]
    assert _cell(deltas[2], 1, 14) == tuple(lut[0])
    assert _cell(deltas[2], 10, 0) == tuple(lut[-1])


def test_one_renderer_for_tensorboard_and_videos(tmp_path):
    from diagnostics import video

    w = _model().conv.weight.detach().numpy()
    assert video.weight_frame is weight_frame  # the video module draws with the same function
    with Writer(tmp_path) as wr:
        WeightImages({"M": _model()}, wr).write(1)
    img = _images(tmp_path, "weights_img/M/conv")[0][1]
    pic = weight_frame(w, 1.0, max_w=480, max_h=480)
    top = img.shape[0] - BAR_H - pic.shape[0]
    assert (img[top : top + pic.shape[0], : pic.shape[1]] == pic).all()


def test_write_leaves_model_untouched_and_copies_once_per_model(tmp_path, monkeypatch):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    orig = torch.Tensor.cpu

    def counting(self, *a, **k):
        calls.append(tuple(self.shape))
        return orig(self, *a, **k)

    with Writer(tmp_path) as w:
        logger = WeightImages({"M": model}, w)
        monkeypatch.setattr(torch.Tensor, "cpu", counting)
        logger.write(1)
        monkeypatch.undo()
    assert len(calls) == 1  # all layers of the model in one flat host copy
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_non_writing_rank_writes_nothing(tmp_path):
    w = Writer(tmp_path / "r1", rank=1)
    WeightImages({"M": _model()}, w).write(1)  # no error, no copy, no file
    w.close()
    assert not (tmp_path / "r1").exists() or not any((tmp_path / "r1").iterdir())


def test_pointwise_kernels_are_the_out_by_in_matrix():
    from diagnostics.weight_images import weight_image

    w = torch.arange(6.0).reshape(2, 3, 1, 1, 1)  # Conv3d(3, 2, 1)
    np.testing.assert_array_equal(weight_image(w), [[0, 1, 2], [3, 4, 5]])


def test_snapshot_images_match_the_live_picture(tmp_path):
    from diagnostics.weight_images import snapshot_images

    model = _model()
    with Writer(tmp_path) as w:
        WeightImages({"M": model}, w).write(3)
    live = _images(tmp_path, "weights_img/M/conv")[0][3]
    snap = {f"weights/M/{k}": v.numpy() for k, v in model.state_dict().items()}
    out = snapshot_images(snap, snap, 3)
    assert set(out) == {"M/conv", "M/head"}  # no biases, no one-value layer
    assert (out["M/conv"] == live).all()
