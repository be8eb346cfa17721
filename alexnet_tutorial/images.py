"""Reading a person's digit the way MNIST digits were made (chapter "Predictions").

MNIST digits are white ink on black, the digit scaled to fit a 20x20 box and placed in a
28x28 image so that its centre of mass is at the centre. A photo or drawing is brought to
the same form: grayscale, inverted when the paper is light, cropped to the ink, scaled
into 20x20, centred by centre of mass.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import MNIST_MEAN, MNIST_STD
from .errors import UserError
from .model import eval_mode

MAX_PIXELS = 40_000_000  # refuse images larger than this (decompression bombs)
WORK_SIDE = 1024  # larger images are shrunk to fit a box this wide and high before anything else
# The formats a photo or drawing of a digit comes in, as PIL names them (JPEG also reads the
# MPO files some phone cameras write; PPM also reads PGM). Other formats are refused unread,
# EPS and PDF among them (PIL hands EPS to Ghostscript).
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
MNIST_CENTRE = 14.0  # row and column of an MNIST digit's centre of mass (0-based pixel index)


class ImageError(UserError, ValueError):
    """An image file that cannot be read as a digit; the message names the file and why."""


@dataclass
class Prepared:
    """Every step of :func:`prepare`, for showing them side by side."""

    gray: np.ndarray       # H x W, 0..1, as read (after flattening alpha onto white)
    ink: np.ndarray        # H x W, 0..1, ink bright on a dark background
    inverted: bool         # whether the background was light and so was inverted
    cropped: np.ndarray    # the ink's bounding box
    digit: np.ndarray      # 28 x 28, 0..1, MNIST-style

    def tensor(self) -> torch.Tensor:
        """1 x 1 x 28 x 28, normalised like the training data."""
        x = torch.from_numpy(self.digit).float()[None, None]
        return (x - MNIST_MEAN) / MNIST_STD


def load_image(path) -> np.ndarray:
    """Read a PNG, JPEG, GIF, BMP, TIFF, WebP or PPM/PGM file as grayscale 0..1, shrunk to fit
    ``WORK_SIDE`` x ``WORK_SIDE``; transparency is laid on white. 16-bit and float images are
    scaled by their own range (12-bit scans come in 16-bit files); NaN or infinite pixels are refused."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's notes on large or odd files: the one line says it all
            gray = _read_gray(path)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # so large that PIL refuses to open it at all
        found = re.search(r"(\d+) pixels", str(exc))
        raise ImageError(_too_large(path, f"{int(found.group(1)):,} pixels" if found else "")) from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image PIL can read as one of {', '.join(FORMATS)}") from None
    except (OSError, ValueError, SyntaxError):
        raise ImageError(f"{path}: damaged or unreadable image") from None
    except Exception:  # PIL's decoders raise a zoo of errors on damaged files
        raise ImageError(f"{path}: damaged or unreadable image") from None
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"{path}: empty image")
    return gray


def _read_gray(path: Path) -> np.ndarray:
    """The pixels of ``path`` as grayscale 0..1 (see :func:`load_image`)."""
    from PIL import Image, ImageOps

    with Image.open(path, formats=FORMATS) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(_too_large(path, f"{img.width}x{img.height} pixels"))
        img = _shrink(img)
        img.load()
        img = ImageOps.exif_transpose(img)  # phone photos store "rotate me" in EXIF
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        if img.mode.startswith("I;16") or img.mode in ("I", "F"):
            # 16-bit scans and float images: convert("L") would clip them to white.
            return _own_range(np.asarray(img, dtype=np.float32), path)
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def _too_large(path, size: str) -> str:
    return f"{path}: image is too large ({size + '; ' if size else ''}at most {MAX_PIXELS:,} pixels are read)"


def _own_range(values: np.ndarray, path) -> np.ndarray:
    """``values`` scaled from their own minimum and maximum to 0..1, not from the type's full
    range: 12-bit data in a 16-bit file uses a sixteenth of it. A uniform image gives zeros."""
    if not np.isfinite(values).all():
        raise ImageError(f"{path}: some pixels are not finite numbers (NaN or infinity); "
                         "no digit can be read from them")
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _shrink(img):
    """``img`` shrunk in place to fit ``WORK_SIDE`` x ``WORK_SIDE`` (a JPEG is decoded at a
    reduced scale already), so that no full-size float copy of a large photo is ever made: the
    digit ends up 20 pixels high, and a 1024-pixel image keeps far more detail than that."""
    from PIL import Image

    if max(img.size) <= WORK_SIDE:
        return img
    if img.mode.startswith("I;16"):  # 16-bit scans: PIL 10 cannot resize them
        img = img.convert("I")
    img.thumbnail((WORK_SIDE, WORK_SIDE), Image.LANCZOS)
    return img


def prepare(gray: np.ndarray, name: str = "image") -> Prepared:
    """Bring a grayscale image (0..1) to MNIST's form; see the module docstring."""
    from PIL import Image

    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ImageError(f"{name}: expected a 2-D grayscale image, got shape {gray.shape}")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    # Light paper is the background nearer the brightest pixel, even in a dim photo (gray paper).
    inverted = bool(np.median(border) > (gray.min() + gray.max()) / 2)
    ink = 1.0 - gray if inverted else gray.copy()
    # Stretch so that the background is 0 and the strongest ink 1; faint noise is cut.
    low, high = float(np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))), float(ink.max())
    if high - low < 0.1:
        raise ImageError(f"{name}: no digit found (the image is almost uniform)")
    ink = np.clip((ink - low) / (high - low), 0.0, 1.0)
    ink[ink < 0.2] = 0.0
    rows, cols = np.nonzero(ink)
    cropped = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = cropped.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray((cropped * 255).astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float32) / 255.0
    digit = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    digit[top:top + small.shape[0], left:left + small.shape[1]] = small
    digit = _centre_of_mass(digit)
    return Prepared(gray=gray, ink=ink, inverted=inverted, cropped=cropped, digit=np.clip(digit, 0, 1))


def _centre_of_mass(digit: np.ndarray) -> np.ndarray:
    """Shift ``digit`` by whole pixels so its centre of mass sits where MNIST's do: on pixel
    (14, 14), not the geometric centre (13.5, 13.5). Across the 60,000 training digits the
    centre of mass lies between 13.5 and 14.5 in each axis, averaging 14.0."""
    total = digit.sum()
    if total <= 0:
        return digit
    ys, xs = np.indices(digit.shape)
    dy = int(round(MNIST_CENTRE - (ys * digit).sum() / total))
    dx = int(round(MNIST_CENTRE - (xs * digit).sum() / total))
    out = np.zeros_like(digit)
    src = digit[max(0, -dy):28 - max(0, dy), max(0, -dx):28 - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Softmax probabilities (N x 10) for normalised N x 1 x 28 x 28 images, in eval mode.

    The images go through the model ``batch_size`` at a time, so that predicting the whole
    test set never holds every image's activations at once (about 1 GB for 10,000 images)."""
    with eval_mode(model):
        param = next(model.parameters())
        probabilities = [torch.softmax(model(batch.to(param.device, param.dtype)).float(), dim=1).cpu()
                         for batch in images.split(batch_size)]
    return torch.cat(probabilities) if probabilities else torch.empty(0, 10)


def predict_files(model: torch.nn.Module, paths, errors: str = "raise") -> list[dict]:
    """For each image file: the digit and the top-3 ``(digit, probability)`` pairs.

    A file that cannot be read as a digit raises :class:`ImageError` (``errors="raise"``),
    or with ``errors="report"`` takes its place in the list as ``{"image": ..., "error": ...}``
    so that every other file still gets its result (the command line's ``predict``)."""
    if errors not in ("raise", "report"):
        raise ValueError(f"errors must be 'raise' or 'report', got {errors!r}")
    results, prepared = [], []
    for path in paths:
        try:
            prepared.append(prepare(load_image(path), str(path)))
            results.append({"image": str(path)})
        except ImageError as exc:
            if errors == "raise":
                raise
            results.append({"image": str(path), "error": str(exc)})
    if prepared:
        probs = iter(predict_probabilities(model, torch.cat([p.tensor() for p in prepared])))
        for result in results:
            if "error" not in result:
                top = torch.topk(next(probs), 3)
                result["digit"] = int(top.indices[0])
                result["top3"] = [{"digit": int(d), "probability": float(p)} for p, d in zip(top.values, top.indices)]
    return results
