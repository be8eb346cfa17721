"""Pictures of what the network sees, static and interactive (chapters "The model" and
"Predictions").

Each picture has one drawing function that returns a matplotlib ``Figure``; the widgets
call the same functions and show the result as PNG bytes in an ``ipywidgets.Image``, so a
page saved with its widget state still shows the picture without a running kernel.
Figures get an opaque white background, so that they stay readable on a dark page.
"""

from __future__ import annotations

import io
import math

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from .images import predict_probabilities
from .plots import _pixels

LAYERS = ("layer1", "layer2", "layer3", "layer4", "layer5")
BACKGROUND = "white"


class _Figure(Figure):
    """A Figure that shows itself in a notebook, even where pyplot was never imported."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, on a white background."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, facecolor=BACKGROUND, bbox_inches="tight")
    return buf.getvalue()


def _controls(*children) -> widgets.HBox:
    # Side by side where there is room, one under the other on a phone.
    return widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap"))


def _image_widget() -> widgets.Image:
    # Scales down on a narrow screen instead of overflowing it.
    return widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))


# -- The model: filters and feature maps ------------------------------------------------

def filters_figure(model: torch.nn.Module) -> Figure:
    """The first conv layer's 3x3 filters, one small square each (chapter "The model").

    Red weights brighten the output where the image is bright, blue ones darken it; all
    filters share one colour scale so that their strengths can be compared.
    """
    weights = model.layer1[0].weight.detach().float().cpu()[:, 0]  # C x 3 x 3
    limit = float(weights.abs().max()) or 1.0
    cols = 8
    rows = math.ceil(len(weights) / cols)
    fig = _Figure(figsize=(cols * 0.8, rows * 0.8 + 0.5), facecolor=BACKGROUND, layout="constrained")
    fig.suptitle(f"layer1: {len(weights)} filters of 3x3 (red positive, blue negative)")
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).flat):
        ax.set_axis_off()
        if i < len(weights):
            ax.imshow(weights[i].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(str(i), fontsize=8)
    return fig


@torch.no_grad()
def feature_maps(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each conv layer's output for a batch of images: ``{"layer1": N x C x H x W, ...}``."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = images.to(param.device, param.dtype)
        maps = {}
        for name in LAYERS:
            x = getattr(model, name)(x)
            maps[name] = x.float().cpu()
    finally:
        model.train(was_training)
    return maps


def mosaic(maps: torch.Tensor, gap: int = 1) -> np.ndarray:
    """C x H x W channels tiled into one 2-D array, each channel scaled to 0..1 on its own
    (an all-zero channel, one the ReLU silenced, stays black); gaps are NaN."""
    c, h, w = maps.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    for i, channel in enumerate(maps.numpy()):
        top, left = (i // cols) * (h + gap), (i % cols) * (w + gap)
        low, high = channel.min(), channel.max()
        grid[top:top + h, left:left + w] = (channel - low) / (high - low) if high > low else 0.0
    return grid


def _draw_feature_maps(image: torch.Tensor, maps: torch.Tensor, layer: str, label=None) -> Figure:
    # Small in inches, so that the text stays legible when a phone scales the picture down.
    fig = _Figure(figsize=(6.4, 3.4), facecolor=BACKGROUND, layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 3])
    left.imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
    left.set_title("input" if label is None else f"input (label {int(label)})")
    left.set_axis_off()
    c, h, w = maps.shape
    right.imshow(mosaic(maps), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    right.set_title(f"{layer}: {c} channels of {h}x{w}")
    right.set_axis_off()
    return fig


def feature_maps_figure(model: torch.nn.Module, image: torch.Tensor, layer: str, label=None) -> Figure:
    """One image beside every channel of one layer's output (chapter "The model").

    ``image`` is one normalised 1 x 28 x 28 (or 1 x 1 x 28 x 28) image; ``layer`` is
    ``"layer1"`` .. ``"layer5"``.
    """
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    image = image.reshape(1, 1, 28, 28)
    return _draw_feature_maps(image, feature_maps(model, image)[layer][0], layer, label)


def feature_map_viewer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> widgets.VBox:
    """Pick a test image and a layer, see that layer's channels (chapter "The model")."""
    maps = feature_maps(model, images)  # every layer of every image, computed once
    index = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
    layer = widgets.Dropdown(options=LAYERS, value="layer1", description="layer")
    caption = widgets.HTML()

    def draw(_change=None):
        i, name = index.value, layer.value
        picture.value = to_png(_draw_feature_maps(images[i], maps[name][i], name, labels[i]))
        caption.value = f"Test image {i}, true label <b>{int(labels[i])}</b>, {name}"

    picture = _image_widget()
    draw()
    index.observe(draw, names="value")
    layer.observe(draw, names="value")
    return widgets.VBox([_controls(index, layer), caption, picture])


# -- Predictions: probabilities ---------------------------------------------------------

def probabilities_figure(probs: torch.Tensor, label, image: torch.Tensor | None = None) -> Figure:
    """The ten class probabilities as bars, with ``image`` beside them when given
    (chapter "Predictions"). The predicted digit's bar is blue when it is right and red
    when it is wrong; the true label is marked below the axis."""
    probs = torch.as_tensor(probs).float().flatten()
    label, predicted = int(label), int(probs.argmax())
    fig = _Figure(figsize=(5.6, 2.5) if image is not None else (4, 2.5), facecolor=BACKGROUND,
                 layout="constrained")
    if image is not None:
        left, ax = fig.subplots(1, 2, width_ratios=[1, 2.2])
        left.imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
        left.set_axis_off()
    else:
        ax = fig.subplots()
    colors = ["#bbbbbb"] * 10
    colors[predicted] = "#1f77b4" if predicted == label else "#d62728"
    ax.bar(range(10), probs.numpy(), color=colors)
    ax.set_xticks(range(10), [f"{d}\ntrue" if d == label else str(d) for d in range(10)])
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    verdict = "right" if predicted == label else "wrong"
    ax.set_title(f"true {label}, predicted {predicted} ({100 * probs[predicted]:.1f}%, {verdict})")
    ax.spines[["top", "right"]].set_visible(False)
    return fig


CHOICES = [("all", "all"), ("misclassified only", "wrong")] + [(f"digit {d}", d) for d in range(10)]


def prediction_explorer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        show="all") -> widgets.VBox:
    """Step through test images of one digit, all of them, or only the misclassified ones,
    and see what the network predicts for each (chapter "Predictions"). ``show`` is the first
    choice: ``"all"``, ``"wrong"`` (misclassified only) or a digit 0..9."""
    probs = predict_probabilities(model, images)  # computed once, in eval mode
    predicted = probs.argmax(1)
    which = widgets.Dropdown(options=CHOICES, value=show, description="show")
    index = widgets.IntSlider(value=0, min=0, max=0, description="image")
    caption = widgets.HTML()
    picture = _image_widget()

    def matching() -> torch.Tensor:
        if which.value == "all":
            return torch.arange(len(labels))
        if which.value == "wrong":
            return torch.nonzero(predicted != labels).flatten()
        return torch.nonzero(labels == which.value).flatten()

    def draw(_change=None):
        chosen = matching()
        if len(chosen) == 0:
            index.disabled = True
            caption.value = "No image matches this choice."
            picture.value = b""
            return
        index.disabled = False
        i = int(chosen[index.value])
        picture.value = to_png(probabilities_figure(probs[i], labels[i], images[i]))
        caption.value = (f"{index.value + 1} of {len(chosen)}: test image {i}, "
                         f"true label <b>{int(labels[i])}</b>, predicted <b>{int(predicted[i])}</b>")

    def new_choice(_change=None):
        index.unobserve(draw, names="value")  # draw once, after both changes
        index.value, index.max = 0, max(len(matching()) - 1, 0)
        index.observe(draw, names="value")
        draw()

    index.observe(draw, names="value")
    which.observe(new_choice, names="value")
    new_choice()
    return widgets.VBox([_controls(which, index), caption, picture])
