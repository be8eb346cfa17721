"""Every text in every figure of :mod:`alexnet_tutorial.plots` is legible where the book shows it.

The book's content column is 735 CSS pixels wide on a desktop; a PNG wider than that is scaled
down to fit it, a narrower one is shown at its own size. A text's rendered height is therefore
``fontsize (pt) * DPI / 72 * min(1, 735 / PNG width)``, and it must be at least 12 px, the
body's small print (issue 21: the network diagram's parameter counts were about 7 px).
The PNG's width is the one :func:`alexnet_tutorial.plots.to_png` writes (``bbox_inches="tight"``).
"""

from __future__ import annotations

import inspect
import struct

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from alexnet_tutorial import plots
from alexnet_tutorial.images import prepare
from alexnet_tutorial.model import AlexNet

COLUMN_PX = 735  # the book's content column on a desktop
MIN_TEXT_PX = 12  # the body's small print
NOT_FIGURES = {"BookFigure", "Figure", "to_png", "confusion_matrix", "mosaic", "layer_table", "feature_maps"}


def png_width(png: bytes) -> int:
    return struct.unpack(">I", png[16:20])[0]  # the IHDR chunk's width


def rendered_sizes(fig: Figure, monkeypatch) -> list[tuple[str, float]]:
    """(text, rendered height in CSS px) of every non-empty text that drawing ``fig`` draws
    (tick labels of an axis turned off are not drawn, so they do not count)."""
    drawn, draw = [], Text.draw

    def recording(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return draw(self, renderer)

    with monkeypatch.context() as m:
        m.setattr(Text, "draw", recording)
        width = png_width(plots.to_png(fig))
    scale = min(1.0, COLUMN_PX / width)
    return [(t.get_text(), t.get_fontsize() * plots.DPI / 72 * scale) for t in set(drawn)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AlexNet()


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(n, 1, 28, 28), torch.arange(n) % 10


def _probabilities(labels: torch.Tensor) -> torch.Tensor:
    """Confident and wrong on every other image, so that there are mistakes to show."""
    probs = torch.full((len(labels), 10), 0.01)
    predicted = torch.where(torch.arange(len(labels)) % 2 == 0, (labels + 3) % 10, labels)
    probs[torch.arange(len(labels)), predicted] = 0.91
    return probs


def _prepared():
    gray = np.ones((60, 40))
    gray[10:50, 18:23] = 0.0  # a dark stroke on white: a "1"
    return prepare(gray)


def cases(model) -> dict[str, list[Figure]]:
    """Figures from every plotting function, made as the book makes them, from small inputs."""
    images, labels = _images(32)
    probs = _probabilities(labels)
    history = [{"epoch": e, "train_loss": 1.0 / e, "test_loss": 0.05, "test_accuracy": 0.99}
               for e in range(1, 11)]
    rates = [0.1 * min(1, s / 40) for s in range(240)]
    weights = model.layer1[0].weight
    return {
        "sample_grid": [plots.sample_grid(images, labels, n=32)],
        "learning_curves": [plots.learning_curves(history, {"floor of the smoothed loss": 0.5,
                                                            "floor of the plain loss": 0.0})],
        "learning_rate_schedule": [plots.learning_rate_schedule(rates, 24)],
        "prediction_grid": [plots.prediction_grid(images[:24], labels[:24], probs[:24].argmax(1))],
        "confusion_figure": [plots.confusion_figure(plots.confusion_matrix(labels, probs.argmax(1)) * 137)],
        "confident_mistakes": [plots.confident_mistakes(images, labels, probs, n=16),
                               plots.confident_mistakes(images, labels, torch.eye(10)[labels])],
        "probabilities_figure": [plots.probabilities_figure(probs[0], labels[0], images[0]),
                                 plots.probabilities_figure(probs[1], labels[1])],
        "preparation_steps": [plots.preparation_steps(_prepared(), probs[0], title="digit-1.png"),
                              plots.preparation_steps(_prepared())],
        "network_diagram": [plots.network_diagram(model)],
        "filter_change": [plots.filter_change(weights, 1.5 * weights)],
        "filters_figure": [plots.filters_figure(model)],
        "feature_maps_figure": [plots.feature_maps_figure(model, images[0], layer, labels[0])
                                for layer in ("layer1", "layer5")],
    }


def test_every_plotting_function_is_checked(model):
    public = {name for name, f in inspect.getmembers(plots, inspect.isfunction)
              if not name.startswith("_") and f.__module__ == plots.__name__}
    assert public - NOT_FIGURES == set(cases(model))


def test_every_text_is_at_least_12_px_where_the_book_shows_it(model, monkeypatch):
    small = {}
    for name, figures in cases(model).items():
        for fig in figures:
            for text, px in rendered_sizes(fig, monkeypatch):
                if px < MIN_TEXT_PX - 1e-6:
                    small.setdefault(name, set()).add(f"{text!r} {px:.1f} px")
    assert not small, "texts under 12 px at the rendered size: " + "; ".join(
        f"{name}: {', '.join(sorted(found)[:3])}" for name, found in small.items())
