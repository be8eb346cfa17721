"""The two widgets of chapters "The model" and "Predictions": pick a test image and see what
the network makes of it.

The pictures are the figures of :mod:`alexnet_tutorial.plots`, shown as PNG bytes in an
``ipywidgets.Image``.

The two widgets work in two ways. In a running notebook they draw each picture on demand,
for any test image. A page saved with its widget state (the built book) has no kernel to
draw with, so each widget also carries a few precomputed pictures in ``Stack`` widgets
whose ``selected_index`` follows the controls through ``jslink``, which the browser runs
by itself. The first move of a control that reaches a kernel switches a widget from those
saved pictures to the live version. ``Stack`` is new in ipywidgets 8; on 7.x (Colab) the
widgets are live only.
"""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from PIL import Image

from .images import predict_probabilities
from .model import CONV_LAYERS
from .plots import feature_maps_figure, probabilities_figure, to_png

SAVED_COLOURS = 256  # saved pictures are stored with a palette of this many colours, a third of the bytes
HAS_STACK = hasattr(widgets, "Stack")  # ipywidgets 8; without it the widgets are live only


def saved_png(fig: Figure) -> bytes:
    """The figure as a palette PNG of ``SAVED_COLOURS`` colours: what the saved pictures use,
    so that a page's widget state stays small."""
    picture = Image.open(io.BytesIO(to_png(fig))).convert("RGB")
    buf = io.BytesIO()
    picture.quantize(SAVED_COLOURS, dither=Image.Dither.NONE).save(buf, format="png", optimize=True)
    return buf.getvalue()


class Viewer(widgets.VBox):
    """The box a widget function returns. Where a notebook cannot show widgets (an untrusted
    notebook before its cells run, a plain viewer) it shows ``first_png`` and the line
    ``summary`` instead of the widget's repr. ``links`` are its browser-side links, if any."""

    def __init__(self, children, first_png: bytes, summary: str):
        super().__init__(children)
        self.first_png, self.summary, self.links = first_png, summary, []

    def _repr_mimebundle_(self, **kwargs):  # ipywidgets 8 (7.x displays itself, without the fallback)
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = self.summary
        if self.first_png:
            data["image/png"] = base64.b64encode(self.first_png).decode("ascii")
        return data


def _saved_states(box: Viewer, switches, go_live) -> None:
    """Make the browser's links ``box.links`` give way to ``go_live`` on the first change of
    any control in ``switches`` that reaches the kernel."""
    def first_change(change):
        for control in switches:
            control.unobserve(first_change, names="value")
        for link in box.links:
            link.unlink()
        box.links = []
        go_live(change)

    for control in switches:
        control.observe(first_change, names="value")


def _controls(*children) -> widgets.HBox:
    # Side by side where there is room, one under the other on a phone.
    return widgets.HBox(children, layout=widgets.Layout(flex_flow="row wrap"))


def _image_widget(png: bytes = b"") -> widgets.Image:
    # Scales down on a narrow screen instead of overflowing it.
    return widgets.Image(value=png, format="png", layout=widgets.Layout(max_width="100%", height="auto"))


# -- The model: feature maps ------------------------------------------------------------

def first_of_each_digit(labels: torch.Tensor) -> list[int]:
    """The index of the first image of each digit in ``labels``, in index order."""
    return sorted(int(torch.nonzero(labels == d)[0]) for d in range(10) if (labels == d).any())


def feature_map_viewer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       saved: list[int] | None = None) -> Viewer:
    """Pick a test image and a layer, see that layer's channels (chapter "The model").

    Live, the slider reaches every image in ``images`` and each picture is drawn on demand.
    The saved page steps through the images ``saved`` (indices into ``images``; default the
    first of each digit) in every layer, precomputed; ``saved=[]`` makes it live only."""
    saved = first_of_each_digit(labels) if saved is None else list(saved)
    index = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
    layer = widgets.Dropdown(options=CONV_LAYERS, value="layer1", description="layer")
    caption, picture = widgets.HTML(), _image_widget()

    def figure(i: int, name: str) -> Figure:
        return feature_maps_figure(model, images[i], name, labels[i])

    def describe(i: int, name: str) -> str:
        return f"image {i}, true label <b>{int(labels[i])}</b>, {name}"

    def draw(_change=None):
        i, name = index.value, layer.value
        picture.value, caption.value = to_png(figure(i, name)), "Test " + describe(i, name)

    live = [_controls(index, layer), caption, picture]
    summary = "Feature-map viewer: run this cell to pick a test image and a layer."
    if not (HAS_STACK and saved):
        draw()
        index.observe(draw, names="value")
        layer.observe(draw, names="value")
        return Viewer(live, picture.value, summary)

    # One Stack per layer, each holding every saved image; the outer Stack picks the layer.
    by_layer = widgets.Stack([widgets.Stack([widgets.VBox([
        widgets.HTML(f"Saved image {n + 1} of {len(saved)}: test " + describe(i, name)),
        _image_widget(saved_png(figure(i, name)))]) for n, i in enumerate(saved)], selected_index=0)
        for name in CONV_LAYERS], selected_index=0)
    index.max = len(saved) - 1
    box = Viewer([_controls(index, layer), by_layer], bytes(by_layer.children[0].children[0].children[1].value),
                 summary)
    box.links = [widgets.jslink((layer, "index"), (by_layer, "selected_index"))]
    box.links += [widgets.jslink((index, "value"), (stack, "selected_index")) for stack in by_layer.children]

    def go_live(_change):
        i = saved[min(index.value, len(saved) - 1)]  # the image on show, now as an index into all of them
        index.max = len(images) - 1
        index.value = i
        draw()
        index.observe(draw, names="value")
        layer.observe(draw, names="value")
        box.children = live

    _saved_states(box, [index, layer], go_live)
    return box


# -- Predictions: probabilities ---------------------------------------------------------

CHOICES = [("all", "all"), ("misclassified only", "wrong")] + [(f"digit {d}", d) for d in range(10)]


def chosen_for_saving(labels: torch.Tensor, probs: torch.Tensor, mistakes: int = 16, per_digit: int = 3) -> list[int]:
    """The test images a saved page steps through: the ``mistakes`` most confident mistakes
    and the first ``per_digit`` correctly read images of each digit, in index order."""
    confidence, predicted = probs.max(1)
    wrong = torch.nonzero(predicted != labels).flatten()
    chosen = set(wrong[confidence[wrong].argsort(descending=True)[:mistakes]].tolist())
    for d in range(10):
        chosen.update(torch.nonzero((labels == d) & (predicted == d)).flatten()[:per_digit].tolist())
    return sorted(chosen)


def prediction_explorer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, show="all",
                        probabilities: torch.Tensor | None = None, saved: list[int] | None = None) -> Viewer:
    """Step through test images of one digit, all of them, or only the misclassified ones,
    and see what the network predicts for each (chapter "Predictions"). ``show`` is the first
    choice: ``"all"``, ``"wrong"`` (misclassified only) or a digit 0..9.

    Live, every image in ``images`` can be reached. The saved page steps through the images
    ``saved`` (default :func:`chosen_for_saving`), precomputed; ``saved=[]`` makes it live only.
    ``probabilities`` (N x 10) saves computing them again when the caller has them."""
    probs = predict_probabilities(model, images) if probabilities is None else probabilities
    predicted = probs.argmax(1)
    saved = chosen_for_saving(labels, probs) if saved is None else list(saved)
    which = widgets.Dropdown(options=CHOICES, value=show, description="show")
    index = widgets.IntSlider(value=0, min=0, max=0, description="image")
    caption = widgets.HTML()
    picture = _image_widget()

    def matches(choice, i: torch.Tensor) -> torch.Tensor:
        if choice == "all":
            return torch.ones_like(i, dtype=torch.bool)
        if choice == "wrong":
            return predicted[i] != labels[i]
        return labels[i] == choice

    def matching() -> torch.Tensor:
        every = torch.arange(len(labels))
        return every[matches(which.value, every)]

    def describe(i: int) -> str:
        return f"test image {i}, true label <b>{int(labels[i])}</b>, predicted <b>{int(predicted[i])}</b>"

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
        caption.value = f"{index.value + 1} of {len(chosen)}: " + describe(i)

    def show_position(position: int = 0):
        index.unobserve(draw, names="value")  # draw once, after both changes
        index.value, index.max = 0, max(len(matching()) - 1, 0)
        index.value = position
        index.observe(draw, names="value")
        draw()

    def start_live():
        index.observe(draw, names="value")
        which.observe(lambda _change: show_position(0), names="value")

    live = [_controls(which, index), caption, picture]
    summary = "Prediction explorer: run this cell to step through the test images and their predictions."
    if not (HAS_STACK and saved):
        start_live()
        show_position(0)
        return Viewer(live, picture.value, summary)

    # For each choice, a slider over the saved images it matches and a Stack of their pictures;
    # two outer Stacks show the chosen choice's slider and pictures.
    saved_t = torch.tensor(saved)
    pictures = {i: _image_widget(saved_png(probabilities_figure(probs[i], labels[i], images[i]))) for i in saved}
    per_choice = [saved_t[matches(value, saved_t)].tolist() for _, value in CHOICES]
    sliders = [widgets.IntSlider(value=0, min=0, max=max(len(c) - 1, 0), description="image", disabled=not c)
               for c in per_choice]
    stacks = [widgets.Stack([widgets.VBox([widgets.HTML(f"{n + 1} of {len(c)} saved: " + describe(i)), pictures[i]])
                             for n, i in enumerate(c)] or [widgets.HTML("No saved image matches this choice.")],
                            selected_index=0) for c in per_choice]
    first = [v for _, v in CHOICES].index(show)
    slider_stack = widgets.Stack(sliders, selected_index=first)
    picture_stack = widgets.Stack(stacks, selected_index=first)
    first_png = bytes(pictures[per_choice[first][0]].value) if per_choice[first] else b""
    box = Viewer([_controls(which, slider_stack), picture_stack], first_png, summary)
    box.links = [widgets.jslink((which, "index"), (outer, "selected_index")) for outer in (slider_stack, picture_stack)]
    box.links += [widgets.jslink((slider, "value"), (stack, "selected_index"))
                  for slider, stack in zip(sliders, stacks)]

    def go_live(_change):
        shown = per_choice[which.index]
        position = 0
        if shown:  # the image on show, now as a position among all images of this choice
            i = shown[min(sliders[which.index].value, len(shown) - 1)]
            position = int(torch.searchsorted(matching(), i))
        start_live()
        show_position(position)
        box.children = live

    _saved_states(box, [which, *sliders], go_live)
    return box
