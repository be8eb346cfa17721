"""How well trained checkpoints read printed digits, beside their MNIST test accuracy.

MNIST is handwriting; readers try the model on digits they type or print. This script renders
the ten digits in the fonts that ship with matplotlib (so every machine with the package has
the same set): DejaVu Sans, Serif and Mono, STIX (a Times-like face) and Computer Modern
(LaTeX's), regular, bold and italic, at two sizes, two positions on the page and both
polarities (dark on light, light on dark). Each image goes through ``images.prepare``, exactly
what ``alexnet-tutorial predict`` does with a file, and then through each checkpoint.

    python benchmarks/printed.py alexnet.pt other.pt --json printed.json
    python benchmarks/printed.py --save-grid printed.png     # look at the set

Prints, per checkpoint, the MNIST test accuracy, the printed-digit accuracy overall and per
font, and the commonest misreadings. The set is fixed (no randomness): 16 fonts x 10 digits x
2 sizes x 2 positions x 2 polarities = 1,280 images.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from alexnet_tutorial.checkpoint import CheckpointError, load_checkpoint, load_model
from alexnet_tutorial.data import DataError, TensorLoader, mnist_tensors
from alexnet_tutorial.images import predict_probabilities, prepare
from alexnet_tutorial.training import evaluate

FONTS = {  # name shown: file in matplotlib's mpl-data/fonts/ttf
    "DejaVu Sans": "DejaVuSans.ttf",
    "DejaVu Sans Bold": "DejaVuSans-Bold.ttf",
    "DejaVu Sans Oblique": "DejaVuSans-Oblique.ttf",
    "DejaVu Sans Mono": "DejaVuSansMono.ttf",
    "DejaVu Sans Mono Bold": "DejaVuSansMono-Bold.ttf",
    "DejaVu Serif": "DejaVuSerif.ttf",
    "DejaVu Serif Bold": "DejaVuSerif-Bold.ttf",
    "DejaVu Serif Italic": "DejaVuSerif-Italic.ttf",
    "STIX": "STIXGeneral.ttf",
    "STIX Bold": "STIXGeneralBol.ttf",
    "STIX Italic": "STIXGeneralItalic.ttf",
    "Computer Modern": "cmr10.ttf",
    "Computer Modern Bold": "cmb10.ttf",
    "Computer Modern Italic": "cmti10.ttf",
    "Computer Modern Sans": "cmss10.ttf",
    "Computer Modern Typewriter": "cmtt10.ttf",
}
SIZES = (32, 120)             # font size in pixels: small print, a large glyph
POSITIONS = ("centre", "corner")
POLARITIES = ("dark on light", "light on dark")


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def render(digit: int, font_file: str, size: int, position: str, polarity: str) -> np.ndarray:
    """One printed digit on a page three glyphs wide and two high, grayscale 0..1."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_dir() / font_file), size)
    page = Image.new("L", (3 * size, 2 * size), 255)
    draw = ImageDraw.Draw(page)
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=font)
    if position == "centre":
        x, y = (page.width - (right - left)) // 2 - left, (page.height - (bottom - top)) // 2 - top
    else:  # near the top-left corner, a tenth of the glyph size in
        x, y = size // 10 - left, size // 10 - top
    draw.text((x, y), str(digit), fill=0, font=font)
    gray = np.asarray(page, dtype=np.float32) / 255.0
    return 1.0 - gray if polarity == "light on dark" else gray


class FontsMissing(Exception):
    """Some of :data:`FONTS` are not in this matplotlib (Computer Modern Italic came with 3.11)."""


def printed_set() -> list[dict]:
    """Every (font, size, position, polarity, digit), with the page and its MNIST-style tensor."""
    import matplotlib

    missing = [file for file in FONTS.values() if not (font_dir() / file).is_file()]
    if missing:  # a smaller set would give figures that do not compare with the committed ones
        raise FontsMissing(f"matplotlib {matplotlib.__version__} lacks {', '.join(missing)} (in {font_dir()}); "
                           f"the printed set needs all {len(FONTS)} fonts: pip install 'matplotlib>=3.11'")
    items = []
    for font, file in FONTS.items():
        for size in SIZES:
            for position in POSITIONS:
                for polarity in POLARITIES:
                    for digit in range(10):
                        page = render(digit, file, size, position, polarity)
                        prepared = prepare(page, f"{digit} in {font}")
                        items.append(dict(font=font, size=size, position=position, polarity=polarity,
                                          label=digit, page=page, digit=prepared.digit,
                                          tensor=prepared.tensor()))
    return items


def read_printed(model: torch.nn.Module, items: list[dict]) -> dict:
    """Predictions of ``model`` on ``items``: accuracy overall and per font, and the misreadings."""
    images = torch.cat([item["tensor"] for item in items])
    labels = torch.tensor([item["label"] for item in items])
    predicted = predict_probabilities(model, images).argmax(1)
    right = (predicted == labels).tolist()
    by_font = {}
    for font in FONTS:
        hits = [r for r, item in zip(right, items) if item["font"] == font]
        by_font[font] = sum(hits) / len(hits)
    misses = Counter(f"{item['label']} read as {int(p)}" for r, item, p in zip(right, items, predicted) if not r)
    return {"accuracy": sum(right) / len(right), "count": len(right), "by_font": by_font,
            "misses": dict(misses.most_common())}


def save_grid(items: list[dict], path: Path) -> None:
    """The prepared 28 x 28 digits of the centred, dark-on-light, large variant: one row per font."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [i for i in items if i["size"] == SIZES[-1] and i["position"] == "centre"
              and i["polarity"] == POLARITIES[0]]
    fig, axes = plt.subplots(len(FONTS), 10, figsize=(6, 0.62 * len(FONTS)))
    for ax, item in zip(axes.flat, chosen):
        ax.imshow(item["digit"], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
    for ax, font in zip(axes[:, 0], FONTS):
        ax.set_ylabel(font, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def describe(path: str) -> str:
    cfg = load_checkpoint(path).get("config", {})
    keys = ("subset", "epochs", "batch_size", "lr", "dropout", "label_smoothing", "shift", "augment")
    return ", ".join(f"{k} {cfg[k]}" for k in keys if k in cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", help="checkpoints to compare (alexnet-tutorial train --out)")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ALEXNET_TUTORIAL_DATA)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the results to OUT")
    parser.add_argument("--save-grid", metavar="PNG", default=None, help="draw the prepared digits, a row per font")
    args = parser.parse_args(argv)
    if not args.checkpoints and not args.save_grid:
        parser.error("give at least one checkpoint, or --save-grid")
    try:  # (evaluate and predict_probabilities run without autograd themselves)
        items = printed_set()
    except FontsMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"# {len(items):,} printed digits: {len(FONTS)} fonts x 10 digits x {len(SIZES)} sizes x "
          f"{len(POSITIONS)} positions x {len(POLARITIES)} polarities", flush=True)
    if args.save_grid:
        save_grid(items, Path(args.save_grid))
        print(f"# prepared digits drawn in {args.save_grid}")
    results = []
    try:
        test = TensorLoader(*mnist_tensors(False, args.data_dir), batch_size=1000) if args.checkpoints else None
        for path in args.checkpoints:
            model = load_model(path)
            mnist = evaluate(model, test, next(model.parameters()).device)["accuracy"]
            printed = read_printed(model, items)
            results.append({"checkpoint": path, "recipe": describe(path), "mnist_test_accuracy": mnist, **printed})
            print(f"{path}: MNIST test {100 * mnist:.2f}%, printed {100 * printed['accuracy']:.2f}% "
                  f"({describe(path)})", flush=True)
    except (CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if results:
        width = max(len(f) for f in FONTS)
        print(f"\n{'printed digits, % right':<{width}}  " + "  ".join(f"{i + 1:>6}" for i in range(len(results))))
        for font in FONTS:
            print(f"{font:<{width}}  " + "  ".join(f"{100 * r['by_font'][font]:6.1f}" for r in results))
        print(f"{'all ' + str(len(items)):<{width}}  " + "  ".join(f"{100 * r['accuracy']:6.1f}" for r in results))
        print(f"{'MNIST test (10,000)':<{width}}  " + "  ".join(f"{100 * r['mnist_test_accuracy']:6.2f}"
                                                          for r in results))
        for i, r in enumerate(results, 1):
            common = ", ".join(f"{k} ({v})" for k, v in list(r["misses"].items())[:6]) or "none"
            print(f"{i}: {r['checkpoint']}; commonest misreadings: {common}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "torch": torch.__version__, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
