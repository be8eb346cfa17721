"""The figures the book draws, one function each, naming the chapter that shows it.

Every function returns a :class:`BookFigure`, which a notebook shows once when it is the
cell's last expression (or passed to ``display``), on a white background that stays readable
on a dark page; the widgets show the same figures through :func:`to_png`. Figures are made
without pyplot, so nothing else shows them a second time. Images are taken as
:func:`alexnet_tutorial.mnist_tensors` gives them: normalised N x 1 x 28 x 28 tensors, drawn
in the data's own gray scale.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from matplotlib.figure import Figure

from .data import MNIST_MEAN, MNIST_STD
from .model import CONV_LAYERS, feature_maps, layer_table

# Pixels per inch of every picture. A page shows a PNG at its own width, or narrower where the
# column is narrower: at 120 a figure's 10-point text is about as large as the page's text.
DPI = 120
# Inches: no wider than the book's 735-px column at DPI, so the page shows a figure unscaled and
# its smallest text, SMALL points (13 px), stays legible (tests/test_figures_legible.py).
WIDTH, SMALL = 6.0, 8


class BookFigure(Figure):
    """A matplotlib figure that shows itself in a notebook as a PNG on white."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("facecolor", "white")
        super().__init__(*args, **kwargs)

    def _repr_png_(self) -> bytes:
        return to_png(self)


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, on white: what a notebook and a widget show."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight")
    return buffer.getvalue()


def _figure(rows: int = 1, cols: int = 1, figsize=(6, 4), layout=None, **kwargs):
    """A new :class:`BookFigure` and its axes (``Figure.subplots``): how every figure starts."""
    fig = BookFigure(figsize=figsize, layout=layout)
    return fig, fig.subplots(rows, cols, **kwargs)


def _pixels(image: torch.Tensor) -> np.ndarray:
    """A 28 x 28 array in [0, 1] from one normalised 1 x 28 x 28 (or 28 x 28) image."""
    x = image.detach().float().cpu().reshape(28, 28) * MNIST_STD + MNIST_MEAN
    return x.clamp(0, 1).numpy()


def _grid(n: int, cols: int, title_lines: int = 1):
    rows = math.ceil(n / cols)
    size = WIDTH / cols  # inches per image
    height = rows * (size + 0.2 * title_lines)  # room for each image's title
    fig, axes = _figure(rows, cols, figsize=(WIDTH, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes.flat


def sample_grid(images: torch.Tensor, labels: torch.Tensor, n: int = 32, cols: int = 8):
    """The first ``n`` images, each titled with its label (chapter "The data")."""
    n = min(n, len(images))
    fig, axes = _grid(n, cols)
    for ax, image, label in zip(axes, images[:n], labels[:n]):
        ax.imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(str(int(label)), fontsize=10, pad=2)
    fig.tight_layout()
    return fig


def learning_curves(history: list[dict], floors: dict[str, float] | None = None):
    """Train and test loss, and test accuracy, per epoch (chapter "Training").

    The train loss is what :func:`alexnet_tutorial.training.end_epoch` records: the epoch's
    mean of the training loss (label-smoothed, with dropout and shifts on); the test loss is
    plain cross-entropy in eval mode. ``floors`` maps a label to a loss drawn as a dashed line
    (the least value a loss can reach), so that the reader sees how far each curve can fall.
    """
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = _figure(2, 1, figsize=(WIDTH, 5.4), sharex=True)  # one above the other
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", color="C0",
                 label="train loss (smoothed, epoch mean)")
    loss_ax.plot(epochs, [h["test_loss"] for h in history], "s-", color="C1", label="test loss (plain)")
    for i, (label, value) in enumerate((floors or {}).items()):
        loss_ax.axhline(value, color=f"C{i}", linestyle="--", linewidth=1, label=label)
    loss_ax.set(ylim=(0, None), ylabel="loss (nats)")
    loss_ax.legend(fontsize=SMALL + 1)
    acc_ax.plot(epochs, [100 * h["test_accuracy"] for h in history], "o-", color="C2")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    for ax in (loss_ax, acc_ax):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def learning_rate_schedule(rates: list[float], steps_per_epoch: int):
    """The learning rate at every optimizer step, against epochs (chapter "Training")."""
    fig, ax = _figure(figsize=(WIDTH, 2.6))
    ax.plot([step / steps_per_epoch for step in range(len(rates))], rates)
    ax.set(xlabel="epoch", ylabel="learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def prediction_grid(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                    cols: int = 8):
    """Each image titled with the predicted digit; a wrong prediction is titled in red with
    the true label under it, and framed in red (chapter "Predictions")."""
    fig, axes = _grid(len(images), cols, title_lines=2)
    for ax, image, label, pred in zip(axes, images, labels, predictions):
        ax.imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
        wrong = int(pred) != int(label)
        title = f"{int(pred)}\ntrue {int(label)}" if wrong else str(int(pred))
        ax.set_title(title, fontsize=SMALL + 1, pad=2, color="red" if wrong else "black",
                     fontweight="bold" if wrong else "normal")
        if wrong:
            ax.axis("on")
            ax.set(xticks=[], yticks=[])
            ax.spines[:].set(color="red", linewidth=2)
    fig.tight_layout()
    return fig


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Counts: row = true digit, column = predicted digit (chapter "Predictions")."""
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def confusion_figure(matrix: torch.Tensor):
    """The confusion matrix as a heat map on a log scale, each count written in its cell
    (chapter "Predictions")."""
    from matplotlib.colors import LogNorm

    counts = matrix.cpu().numpy()
    fig, ax = _figure(figsize=(WIDTH - 0.2, 5.0))
    shown = ax.imshow(np.maximum(counts, 0.5), cmap="Blues", norm=LogNorm(vmin=0.5, vmax=max(counts.max(), 1)))
    n = counts.shape[0]
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                dark = counts[i, j] > counts.max() ** 0.5
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=SMALL,
                        color="white" if dark else "black")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted digit", ylabel="true digit")
    fig.colorbar(shown, ax=ax, label="images (log scale)")
    fig.tight_layout()
    return fig


def confident_mistakes(images: torch.Tensor, labels: torch.Tensor, probabilities: torch.Tensor,
                       n: int = 16, cols: int = 8):
    """The ``n`` wrong predictions the model was most sure of, each titled with the predicted
    digit, its probability and the true label (chapter "Predictions")."""
    confidence, predicted = probabilities.max(1)
    wrong = torch.nonzero(predicted != labels).flatten()
    order = wrong[torch.argsort(confidence[wrong], descending=True)][:n]
    if len(order) == 0:
        fig, ax = _figure(figsize=(3, 0.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center")
        return fig
    fig, axes = _grid(len(order), cols, title_lines=2)
    for ax, i in zip(axes, order.tolist()):
        ax.imshow(_pixels(images[i]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{int(predicted[i])} {100 * float(confidence[i]):.0f}%\ntrue {int(labels[i])}",
                     fontsize=SMALL + 1, pad=2, color="red")
    fig.tight_layout()
    return fig


def probabilities_figure(probs: torch.Tensor, label, image: torch.Tensor | None = None):
    """The ten class probabilities as bars, with ``image`` beside them when given
    (chapter "Predictions"). The predicted digit's bar is blue when it is right and red
    when it is wrong; the true label is marked below the axis."""
    probs = torch.as_tensor(probs).float().flatten()
    label, predicted = int(label), int(probs.argmax())
    if image is not None:
        fig, (left, ax) = _figure(1, 2, figsize=(WIDTH - 0.4, 2.5), layout="constrained", width_ratios=[1, 2.2])
        left.imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
        left.set_axis_off()
    else:
        fig, ax = _figure(figsize=(4, 2.5), layout="constrained")
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


def preparation_steps(prepared, probabilities: torch.Tensor | None = None, title: str = ""):
    """Each step of :func:`alexnet_tutorial.images.prepare` side by side, and the top-3
    predictions when ``probabilities`` (10 values) is given (chapter "Predictions")."""
    steps = [("as read (gray)", prepared.gray),
             ("ink, inverted" if prepared.inverted else "ink", prepared.ink),
             ("cropped to the ink", prepared.cropped),
             ("28 x 28, MNIST-style", prepared.digit)]
    fig = BookFigure(figsize=(WIDTH, 4.6))  # two rows of three (the bars two wide): the column holds it
    named = fig.subplot_mosaic([["0", "1", "2"], ["3", "bars", "bars"]])
    for i, (name, pixels) in enumerate(steps):
        ax = named[str(i)]
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=10)
        ax.set(xticks=[], yticks=[])
    bars = named["bars"]
    if probabilities is not None:
        top = torch.topk(probabilities, 3)
        names = [str(int(d)) for d in top.indices]
        bars.barh(names[::-1], [100 * float(p) for p in top.values][::-1], color="C0")
        bars.set_xlim(0, 100)
        bars.set_xlabel("probability (%)")
        bars.set_title(f"prediction: {names[0]}", fontsize=10)
    else:
        bars.axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return fig


def network_diagram(model: torch.nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)):
    """The network as a row of boxes, one per row of :func:`alexnet_tutorial.model.layer_table`
    (so one per top-level layer), each labelled with its name, output shape and parameter
    count, after a box for the input (chapter "The model"). Drawn from a forward pass of
    ``model``, so it cannot drift from the code. Each layer's box has the gid ``"layer"``."""
    from matplotlib.patches import FancyBboxPatch

    rows = layer_table(model, input_shape)
    boxes = [("input", tuple(input_shape[1:]), None)] + [(r["layer"], r["output_shape"], r["params"]) for r in rows]
    fig, ax = _figure(figsize=(WIDTH, 2.9))  # on a phone the page scrolls it in its box (custom.css)
    ax.set_xlim(-0.5, len(boxes) - 0.5)
    ax.set_ylim(-1.25, 1.15)
    ax.axis("off")
    side, right = input_shape[-1], None  # right: the right edge of the previous box
    for i, (name, shape, params) in enumerate(boxes):
        # Height: the spatial size of a conv layer's output; a fully connected layer is a thin bar.
        spatial = len(shape) == 3
        height = 0.3 + 1.2 * shape[-1] / side if spatial else 1.5
        width = 0.75 if spatial else 0.3
        color = "0.85" if params is None else ("C0" if spatial else "C1")
        ax.add_patch(FancyBboxPatch((i - width / 2, -height / 2), width, height, boxstyle="round,pad=0.02",
                                    facecolor=color, edgecolor="black", alpha=0.6 if params else 1.0,
                                    gid="input" if params is None else "layer"))
        ax.text(i, 0.95, name, ha="center", va="bottom", fontsize=10, fontweight="bold")
        ax.text(i, -0.95, "x".join(str(d) for d in shape), ha="center", va="top", fontsize=SMALL)
        if params is not None:
            ax.text(i, -1.2, f"{params:,}", ha="center", va="top", fontsize=SMALL, color="0.3")
        if right is not None:
            ax.annotate("", xy=(i - width / 2 - 0.04, 0), xytext=(right + 0.04, 0), arrowprops=dict(arrowstyle="->"))
        right = i + width / 2
    ax.set_title("each layer's output shape (channels x height x width, or features)\n"
                 "and its number of parameters", fontsize=10)
    fig.tight_layout()
    return fig


def filter_change(before: torch.Tensor, after: torch.Tensor):
    """How much each first-layer filter changed in training (chapter "The model"): its size
    (L2 norm) before and after, and the cosine similarity of the two, which is 1 when the
    filter kept its pattern and only grew or shrank. ``before`` and ``after`` are C x ... weights."""
    a, b = before.detach().float().cpu().flatten(1), after.detach().float().cpu().flatten(1)
    index = np.arange(len(a))
    fig, (size_ax, cos_ax) = _figure(2, 1, figsize=(WIDTH, 4.8), sharex=True)  # one above the other
    size_ax.bar(index - 0.2, a.norm(dim=1).numpy(), width=0.4, label="before training", color="0.6")
    size_ax.bar(index + 0.2, b.norm(dim=1).numpy(), width=0.4, label="after training", color="C0")
    size_ax.set_ylim(0, 1.3 * float(max(a.norm(dim=1).max(), b.norm(dim=1).max())))  # room for the legend
    size_ax.set_ylabel("size (L2 norm)")
    size_ax.legend(fontsize=SMALL + 1, ncols=2, loc="upper left")
    cos_ax.bar(index, torch.nn.functional.cosine_similarity(a, b, dim=1).numpy(), color="C2")
    cos_ax.set(ylim=(0, 1.05), ylabel="cosine(before, after)")
    cos_ax.set_xlabel("filter")
    for ax in (size_ax, cos_ax):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def filters_figure(model: torch.nn.Module):
    """The first conv layer's 3x3 filters, one small square each (chapter "The model").

    Red weights brighten the output where the image is bright, blue ones darken it; all
    filters share one colour scale so that their strengths can be compared.
    """
    weights = model.layer1[0].weight.detach().float().cpu()[:, 0]  # C x 3 x 3
    limit = float(weights.abs().max()) or 1.0
    cols = 8
    rows = math.ceil(len(weights) / cols)
    size = WIDTH / cols  # inches per filter
    fig, axes = _figure(rows, cols, figsize=(WIDTH, rows * (size + 0.2) + 0.4), layout="constrained", squeeze=False)
    fig.suptitle(f"layer1: {len(weights)} filters of 3x3 (red positive, blue negative)")
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(weights):
            ax.imshow(weights[i].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(str(i), fontsize=SMALL + 1)
    return fig


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


def feature_maps_figure(model: torch.nn.Module, image: torch.Tensor, layer: str, label=None):
    """One image beside every channel of one layer's output (chapter "The model").

    ``image`` is one normalised 1 x 28 x 28 (or 1 x 1 x 28 x 28) image; ``layer`` is
    ``"layer1"`` .. ``"layer5"``.
    """
    if layer not in CONV_LAYERS:
        raise ValueError(f"layer must be one of {', '.join(CONV_LAYERS)}, got {layer!r}")
    maps = feature_maps(model, image.reshape(1, 1, 28, 28))[layer][0]
    # Small in inches, so that the text stays legible when a phone scales the picture down.
    fig, (left, right) = _figure(1, 2, figsize=(WIDTH, 3.2), layout="constrained", width_ratios=[1, 3])
    left.imshow(_pixels(image), cmap="gray", vmin=0, vmax=1)
    left.set_title("input" if label is None else f"input (label {int(label)})")
    left.set_axis_off()
    c, h, w = maps.shape
    right.imshow(mosaic(maps), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    right.set_title(f"{layer}: {c} channels of {h}x{w}")
    right.set_axis_off()
    return fig
