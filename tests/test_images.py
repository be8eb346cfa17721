"""Reading people's digits: any image brought to MNIST's form, and predictions on image files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_tutorial.data import MNIST_MEAN, MNIST_STD
from alexnet_tutorial.images import ImageError, load_image, predict_files, predict_probabilities, prepare


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(digit.shape)
    return float((ys * digit).sum() / digit.sum()), float((xs * digit).sum() / digit.sum())


def ink_box(digit: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(digit)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


FORMS = {
    # name: (how to draw it, file suffix, whether prepare() must invert it)
    "large RGB, dark ink on light paper": (dict(text="3", size=(400, 520), ink=(30, 25, 20), paper=(250, 246, 235),
                                                mode="RGB"), ".png", True),
    "JPEG photo of dark ink on paper": (dict(text="4", size=(360, 300), ink=(40, 40, 60), paper=(235, 235, 225),
                                             mode="RGB"), ".jpg", True),
    "grayscale, light ink on dark": (dict(text="5", size=(200, 200), ink=235, paper=10, mode="L"), ".png", False),
    "RGBA, ink on a transparent background": (dict(text="2", size=(300, 300), ink=(0, 0, 0, 255),
                                                   paper=(0, 0, 0, 0), mode="RGBA"), ".png", True),
    "dim photo: dark ink on gray paper": (dict(text="6", size=(300, 260), ink=(12, 12, 14), paper=(105, 100, 95),
                                               mode="RGB"), ".jpg", True),
    "hand-drawn 7 in thick strokes": (dict(size=(600, 800), thickness=60), ".png", True),
    "tiny 12x10 scrawl": (dict(size=(10, 12), thickness=2), ".png", True),
}


@pytest.mark.parametrize("form", FORMS)
def test_prepare_brings_any_digit_to_mnist_form(draw_digit, tmp_path, form):
    how, suffix, light_paper = FORMS[form]
    path = tmp_path / f"digit{suffix}"
    draw_digit(**how).save(path)
    gray = load_image(path)
    assert gray.ndim == 2 and gray.dtype == np.float32 and 0 <= gray.min() <= gray.max() <= 1
    prepared = prepare(gray, str(path))
    digit = prepared.digit
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert digit.min() >= 0 and digit.max() <= 1 and digit.max() > 0.8
    assert prepared.inverted is light_paper
    height, width = ink_box(digit)
    assert height <= 20 and width <= 20 and max(height, width) >= 17, (height, width)
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1, (cy, cx)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5, (cy, cx)  # where MNIST's are
    ring = np.concatenate([digit[0], digit[-1], digit[:, 0], digit[:, -1]])
    assert ring.max() == 0  # centring did not push ink off the edge
    tensor = prepared.tensor()
    assert tensor.shape == (1, 1, 28, 28)
    assert tensor.min().item() == pytest.approx(-MNIST_MEAN / MNIST_STD)


def test_transparent_background_is_laid_on_white(draw_digit, tmp_path):
    # Transparent pixels are black in RGB terms: dropping alpha would leave black ink on black.
    path = tmp_path / "sticker.png"
    draw_digit(text="2", size=(200, 200), ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA").save(path)
    gray = load_image(path)
    assert gray[0, 0] == 1.0 and gray.min() == 0.0


def test_prepare_centres_digits_where_mnist_has_them(data_dir):
    """MNIST_CENTRE, where prepare() puts a digit's centre of mass, is where MNIST's own are."""
    from alexnet_tutorial.data import mnist_dataset
    from alexnet_tutorial.images import MNIST_CENTRE

    digits = mnist_dataset(False, data_dir, download=False).data[:2000].double()
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = digits.sum((1, 2))
    cy, cx = (digits * ys).sum((1, 2)) / mass, (digits * xs).sum((1, 2)) / mass
    for c in (cy, cx):
        assert abs(c.mean().item() - MNIST_CENTRE) < 0.05


def test_sixteen_bit_scan_reads_like_the_eight_bit_one(draw_digit, tmp_path):
    eight = draw_digit(text="4", size=(120, 140))
    eight.save(tmp_path / "eight.png")
    sixteen = Image.fromarray(np.asarray(eight, dtype=np.uint16) * 257)  # 0..255 -> 0..65535
    sixteen.save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    gray8, gray16 = load_image(tmp_path / "eight.png"), load_image(tmp_path / "sixteen.png")
    np.testing.assert_allclose(gray16, gray8, atol=1e-6)


def test_exif_orientation_is_applied(draw_digit, tmp_path):
    # A phone stores the sensor's pixels and an EXIF tag saying how to turn them upright.
    upright = draw_digit(text="7", size=(120, 160))
    upright.save(tmp_path / "upright.png")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    sideways.save(tmp_path / "photo.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "photo.png"), load_image(tmp_path / "upright.png"))


def test_a_real_mnist_digit_photographed_on_paper_comes_back_close_to_itself(data_dir, tmp_path):
    """An MNIST test digit, printed dark on light paper eight times larger, must come back as
    the digit it was: same size, same place (a one-pixel offset drops the correlation to ~0.6)."""
    from alexnet_tutorial.data import mnist_dataset

    test = mnist_dataset(False, data_dir, download=False)
    correlations = []
    for i in range(20):
        original = test.data[i].numpy().astype(np.float32) / 255
        paper = Image.fromarray(((1 - original) * 255).astype(np.uint8)).resize((224, 224), Image.BILINEAR)
        canvas = Image.new("L", (320, 300), 255)
        canvas.paste(paper, (40, 30))
        path = tmp_path / f"mnist-{i}.png"
        canvas.save(path)
        digit = prepare(load_image(path)).digit
        correlations.append(np.corrcoef(digit.ravel(), original.ravel())[0, 1])
    assert np.median(correlations) > 0.95 and min(correlations) > 0.8, np.round(correlations, 3)


@pytest.mark.parametrize("values", [
    np.full((50, 40), 0.7, dtype=np.float32),
    np.zeros((28, 28), dtype=np.float32),
    np.ones((5, 5), dtype=np.float32),
    (0.5 + 0.02 * np.random.default_rng(0).standard_normal((64, 64))).astype(np.float32),
])
def test_a_uniform_image_has_no_digit(values):
    with pytest.raises(ImageError, match="no digit found"):
        prepare(values, "blank.png")


def test_a_uniform_image_file_has_no_digit(tmp_path):
    path = tmp_path / "white.png"
    Image.new("RGB", (64, 64), (255, 255, 255)).save(path)
    with pytest.raises(ImageError, match="white.png"):
        prepare(load_image(path), str(path))


def test_prepare_refuses_a_non_2d_array():
    with pytest.raises(ImageError, match="2-D"):
        prepare(np.zeros((3, 28, 28), dtype=np.float32))


def test_unreadable_files_give_image_error_naming_the_file(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    truncated = tmp_path / "cut.png"
    Image.new("L", (64, 64), 128).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    for path in (text, truncated, tmp_path / "missing.png", tmp_path):
        with pytest.raises(ImageError) as info:
            load_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_predict_files_gives_three_sorted_guesses_per_image(draw_digit, seeded_model, tmp_path):
    paths = []
    for i, text in enumerate("380"):
        path = tmp_path / f"digit-{i}.png"
        draw_digit(text=text, size=(120, 150)).save(path)
        paths.append(path)
    model = seeded_model(seed=4).train()
    results = predict_files(model, paths)
    assert model.training  # predicting switched to eval and back
    assert [r["image"] for r in results] == [str(p) for p in paths]
    for path, result in zip(paths, results):
        top3 = result["top3"]
        assert len(top3) == 3
        probabilities = [t["probability"] for t in top3]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-6 and all(0 <= p <= 1 for p in probabilities)
        assert len({t["digit"] for t in top3}) == 3 and all(0 <= t["digit"] <= 9 for t in top3)
        assert result["digit"] == top3[0]["digit"]
        expected = predict_probabilities(model, prepare(load_image(path)).tensor())[0]
        assert probabilities == pytest.approx(torch.sort(expected, descending=True).values[:3].tolist(), rel=1e-5)


def test_predict_probabilities_feeds_the_model_a_batch_at_a_time(seeded_model):
    model = seeded_model(seed=3)
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    x = torch.randn(25, 1, 28, 28)
    batched = predict_probabilities(model, x, batch_size=10)
    assert sizes == [10, 10, 5]
    torch.testing.assert_close(batched, predict_probabilities(model, x, batch_size=25))
    assert predict_probabilities(model, x[:0]).shape == (0, 10)


def test_predict_probabilities_runs_in_eval_mode(seeded_model):
    model = seeded_model(seed=5, dropout=0.5).train()
    x = torch.randn(4, 1, 28, 28)
    first, second = predict_probabilities(model, x), predict_probabilities(model, x)
    assert torch.equal(first, second)  # dropout off
    assert model.training
    torch.testing.assert_close(first.sum(1), torch.ones(4))


# --- formats: only those a digit photo or drawing comes in -----------------------------------

@pytest.mark.parametrize("fmt, suffix, mode", [
    ("PNG", ".png", "L"), ("JPEG", ".jpg", "RGB"), ("MPO", ".jpg", "RGB"), ("GIF", ".gif", "L"),
    ("BMP", ".bmp", "RGB"), ("TIFF", ".tif", "L"), ("WEBP", ".webp", "RGB"), ("PPM", ".pgm", "L"),
])
def test_the_formats_people_have_are_read(draw_digit, tmp_path, fmt, suffix, mode):
    path = tmp_path / f"digit{suffix}"
    img = draw_digit(text="3", size=(60, 80), mode=mode, ink=0 if mode == "L" else (0, 0, 0),
                     paper=255 if mode == "L" else (255, 255, 255))
    # A phone's MPO holds several pictures (PIL writes one picture as a plain JPEG).
    img.save(path, format=fmt, **(dict(save_all=True, append_images=[img]) if fmt == "MPO" else {}))
    assert Image.open(path).format == fmt  # what PIL reads it as
    gray = load_image(path)
    assert gray.shape == (80, 60) and gray.min() < 0.2 and gray.max() > 0.8


@pytest.mark.parametrize("fmt, suffix", [("EPS", ".eps"), ("PDF", ".pdf"), ("ICO", ".ico"), ("TGA", ".tga")])
def test_other_formats_are_refused_unread_with_the_accepted_list(draw_digit, tmp_path, monkeypatch, fmt, suffix):
    from PIL import EpsImagePlugin

    path = tmp_path / f"digit{suffix}"
    draw_digit(text="3", size=(60, 80), mode="RGB", ink=(0, 0, 0), paper=(255, 255, 255)).save(path, format=fmt)

    def no_ghostscript(*args, **kwargs):
        raise AssertionError("the EPS reader ran: it hands the file to Ghostscript")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", no_ghostscript)
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not an image PIL can read as one of ") and "\n" not in message
    for name in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM"):
        assert name in message


# --- large images are shrunk before any float copy is made ----------------------------------

@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_large_photo_is_shrunk_first_and_reads_like_a_small_one(draw_digit, tmp_path, suffix):
    """A 12-megapixel photo of a 7 gives (nearly) the digit its 400x300 copy gives, and
    reading it never holds a full-size float copy: numpy's peak stays far below the 48 MB
    that one float32 copy of 12 megapixels takes."""
    import tracemalloc

    from alexnet_tutorial.images import WORK_SIDE

    big, small = tmp_path / f"big{suffix}", tmp_path / f"small{suffix}"
    draw_digit(size=(4000, 3000), thickness=400).save(big)
    draw_digit(size=(400, 300), thickness=40).save(small)
    tracemalloc.start()
    try:
        gray = load_image(big)
        digit = prepare(gray, str(big)).digit
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert max(gray.shape) <= WORK_SIDE and gray.shape[1] / gray.shape[0] == pytest.approx(4 / 3, rel=0.01)
    assert peak < 24e6, f"numpy held {peak / 1e6:.0f} MB reading a 12-megapixel image"
    reference = prepare(load_image(small)).digit
    assert np.abs(digit - reference).mean() < 0.02
    assert np.corrcoef(digit.ravel(), reference.ravel())[0, 1] > 0.98


def test_shrinking_leaves_a_normal_photo_nearly_as_read_at_full_size(draw_digit, tmp_path):
    """Against the digit prepared from every pixel of a 2,000 x 1,500 photo (read here without
    shrinking), the shrunk read differs by a few grey levels at most."""
    path = tmp_path / "photo.jpg"
    draw_digit(text="8", size=(2000, 1500), ink=(40, 40, 60), paper=(235, 235, 225), mode="RGB").save(path)
    full = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255
    shrunk = prepare(load_image(path)).digit
    reference = prepare(full).digit
    assert np.abs(shrunk - reference).mean() < 0.02
    assert np.corrcoef(shrunk.ravel(), reference.ravel())[0, 1] > 0.98


@pytest.mark.parametrize("mode", ["I;16", "P", "1"])
def test_large_images_in_every_mode_are_shrunk_too(draw_digit, tmp_path, mode):
    from alexnet_tutorial.images import WORK_SIDE

    drawn = draw_digit(size=(1600, 1200), thickness=160)
    img = Image.fromarray(np.asarray(drawn, dtype=np.uint16) * 257) if mode == "I;16" else drawn.convert(mode)
    path = tmp_path / "scan.tif"
    img.save(path)
    assert Image.open(path).mode == mode
    gray = load_image(path)
    assert max(gray.shape) <= WORK_SIDE and gray.min() == 0.0 and gray.max() == pytest.approx(1.0)
    small = tmp_path / "small.png"
    drawn.resize((400, 300)).save(small)
    assert np.corrcoef(prepare(gray).digit.ravel(), prepare(load_image(small)).digit.ravel())[0, 1] > 0.95
