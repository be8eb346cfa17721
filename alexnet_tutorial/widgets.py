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
import functools
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


class _LiveFeatureMaps:
    """The live feature-map viewer: its controls, and a picture drawn whenever they change."""

    def __init__(self, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
        self.model, self.images, self.labels = model, images, labels
        self.index = widgets.IntSlider(value=0, min=0, max=len(images) - 1, description="image")
        self.layer = widgets.Dropdown(options=CONV_LAYERS, value="layer1", description="layer")
        self.caption, self.picture = widgets.HTML(), _image_widget()
        self.children = [_controls(self.index, self.layer), self.caption, self.picture]

    def figure(self, i: int, name: str) -> Figure:
        return feature_maps_figure(self.model, self.images[i], name, self.labels[i])

    def describe(self, i: int, name: str) -> str:
        return f"image {i}, true label <b>{int(self.labels[i])}</b>, {name}"

    def draw(self, _change=None) -> None:
        i, name = self.index.value, self.layer.value
        self.picture.value, self.caption.value = to_png(self.figure(i, name)), "Test " + self.describe(i, name)

    def start(self) -> None:
        """Draw the picture for the controls, and again whenever one of them changes."""
        self.draw()
        self.index.observe(self.draw, names="value")
        self.layer.observe(self.draw, names="value")

    def go_live(self, box: Viewer, saved: list[int], position: widgets.SelectionSlider, _change=None) -> None:
        """Turn ``box``, the saved viewer, into the live one, on the saved image it shows
        (``position``, the saved viewer's slider, says which of ``saved`` that is)."""
        self.index.value = saved[position.index or 0]
        self.start()
        box.children = self.children


def feature_map_viewer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       saved: list[int] | None = None) -> Viewer:
    """Pick a test image and a layer, see that layer's channels (chapter "The model").

    Live, the slider reaches every image in ``images`` and each picture is drawn on demand.
    The saved page steps through the images ``saved`` (indices into ``images``; default the
    first of each digit) in every layer, precomputed; ``saved=[]`` makes it live only."""
    saved = first_of_each_digit(labels) if saved is None else list(saved)
    live = _LiveFeatureMaps(model, images, labels)
    summary = "Feature-map viewer: run this cell to pick a test image and a layer."
    if not (HAS_STACK and saved):
        live.start()
        return Viewer(live.children, live.picture.value, summary)
    return _saved_feature_maps(live, saved, summary)


def _saved_feature_maps(live: _LiveFeatureMaps, saved: list[int], summary: str) -> Viewer:
    """The viewer a saved page shows: the pictures of ``saved`` in every layer, linked to
    ``live``'s controls in the browser, until a control's first change goes live."""
    layer = live.layer
    # The slider steps through the saved images and reads out each one's test-image number, as
    # the caption and the live slider do (not its position among the saved ones, from 0).
    index = widgets.SelectionSlider(options=[(str(i), n) for n, i in enumerate(saved)], index=0,
                                    description="image")
    # One Stack per layer, each holding every saved image; the outer Stack picks the layer.
    by_layer = widgets.Stack([widgets.Stack([widgets.VBox([
        widgets.HTML("Test " + live.describe(i, name) + f" (saved picture {n + 1} of {len(saved)})"),
        _image_widget(saved_png(live.figure(i, name)))]) for n, i in enumerate(saved)], selected_index=0)
        for name in CONV_LAYERS], selected_index=0)
    box = Viewer([_controls(index, layer), by_layer], bytes(by_layer.children[0].children[0].children[1].value),
                 summary)
    box.links = [widgets.jslink((layer, "index"), (by_layer, "selected_index"))]
    box.links += [widgets.jslink((index, "index"), (stack, "selected_index")) for stack in by_layer.children]
    _saved_states(box, [index, layer], functools.partial(live.go_live, box, saved, index))
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


def _matches(choice, i: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Which of the images ``i`` the choice ``choice`` (a value of ``CHOICES``) shows."""
    if choice == "all":
        return torch.ones_like(i, dtype=torch.bool)
    if choice == "wrong":
        return predicted[i] != labels[i]
    return labels[i] == choice


class _LivePredictions:
    """The live prediction explorer: its controls, and a picture drawn whenever they change."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, show):
        self.images, self.labels, self.probs, self.predicted = images, labels, probs, probs.argmax(1)
        self.which = widgets.Dropdown(options=CHOICES, value=show, description="show")
        # The caption says "n of N", counting from 1: a readout counting from 0 would contradict it.
        self.index = widgets.IntSlider(value=0, min=0, max=0, description="image", readout=False)
        self.caption = widgets.HTML()
        self.picture = _image_widget()
        self.children = [_controls(self.which, self.index), self.caption, self.picture]

    def figure(self, i: int) -> Figure:
        return probabilities_figure(self.probs[i], self.labels[i], self.images[i])

    def matching(self) -> torch.Tensor:
        """The indices of the images the current choice shows."""
        every = torch.arange(len(self.labels))
        return every[_matches(self.which.value, every, self.labels, self.predicted)]

    def describe(self, i: int) -> str:
        return f"test image {i}, true label <b>{int(self.labels[i])}</b>, predicted <b>{int(self.predicted[i])}</b>"

    def draw(self, _change=None) -> None:
        chosen = self.matching()
        if len(chosen) == 0:
            self.index.disabled = True
            self.caption.value = "No image matches this choice."
            self.picture.value = b""
            return
        self.index.disabled = False
        i = int(chosen[self.index.value])
        self.picture.value = to_png(self.figure(i))
        self.caption.value = f"{self.index.value + 1} of {len(chosen)}: " + self.describe(i)

    def show_position(self, position: int = 0) -> None:
        """Fit the slider to the current choice and show its image at ``position``."""
        self.index.unobserve(self.draw, names="value")  # draw once, after both changes
        self.index.value, self.index.max = 0, max(len(self.matching()) - 1, 0)
        self.index.value = position
        self.index.observe(self.draw, names="value")
        self.draw()

    def choice_changed(self, _change) -> None:
        self.show_position(0)

    def start(self, position: int = 0) -> None:
        """Show the image at ``position`` of the current choice, and follow the controls."""
        self.index.observe(self.draw, names="value")
        self.which.observe(self.choice_changed, names="value")
        self.show_position(position)

    def go_live(self, box: Viewer, per_choice: list[list[int]], sliders: list, _change=None) -> None:
        """Turn ``box``, the saved explorer, into the live one, on the saved image it shows;
        ``per_choice`` and ``sliders`` are the saved images and the slider of each choice."""
        shown = per_choice[self.which.index]
        position = 0
        if shown:  # the image on show, now as a position among all images of this choice
            i = shown[min(sliders[self.which.index].value, len(shown) - 1)]
            position = int(torch.searchsorted(self.matching(), i))
        self.start(position)
        box.children = self.children


def prediction_explorer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, show="all",
                        probabilities: torch.Tensor | None = None, saved: list[int] | None = None) -> Viewer:
    """Step through test images of one digit, all of them, or only the misclassified ones,
    and see what the network predicts for each (chapter "Predictions"). ``show`` is the first
    choice: ``"all"``, ``"wrong"`` (misclassified only) or a digit 0..9.

    Live, every image in ``images`` can be reached. The saved page steps through the images
    ``saved`` (default :func:`chosen_for_saving`), precomputed; ``saved=[]`` makes it live only.
    ``probabilities`` (N x 10) saves computing them again when the caller has them."""
    probs = predict_probabilities(model, images) if probabilities is None else probabilities
    saved = chosen_for_saving(labels, probs) if saved is None else list(saved)
    live = _LivePredictions(images, labels, probs, show)
    summary = "Prediction explorer: run this cell to step through the test images and their predictions."
    if not (HAS_STACK and saved):
        live.start()
        return Viewer(live.children, live.picture.value, summary)
    return _saved_predictions(live, saved, summary)


def _saved_predictions(live: _LivePredictions, saved: list[int], summary: str) -> Viewer:
    """The explorer a saved page shows: for each choice, a slider over the saved images it
    matches and a Stack of their pictures; two outer Stacks show the chosen choice's slider and
    pictures, linked in the browser to ``live``'s controls until a control's first change goes live."""
    saved_t = torch.tensor(saved)
    pictures = {i: _image_widget(saved_png(live.figure(i))) for i in saved}
    per_choice = [saved_t[_matches(value, saved_t, live.labels, live.predicted)].tolist() for _, value in CHOICES]
    sliders = [widgets.IntSlider(value=0, min=0, max=max(len(c) - 1, 0), description="image", disabled=not c,
                                 readout=False)  # the caption counts "n of N saved" from 1
               for c in per_choice]
    stacks = [widgets.Stack([widgets.VBox([widgets.HTML(f"{n + 1} of {len(c)} saved: " + live.describe(i)),
                                           pictures[i]]) for n, i in enumerate(c)]
                            or [widgets.HTML("No saved image matches this choice.")], selected_index=0)
              for c in per_choice]
    first = live.which.index
    slider_stack = widgets.Stack(sliders, selected_index=first)
    picture_stack = widgets.Stack(stacks, selected_index=first)
    first_png = bytes(pictures[per_choice[first][0]].value) if per_choice[first] else b""
    box = Viewer([_controls(live.which, slider_stack), picture_stack], first_png, summary)
    box.links = [widgets.jslink((live.which, "index"), (outer, "selected_index"))
                 for outer in (slider_stack, picture_stack)]
    box.links += [widgets.jslink((slider, "value"), (stack, "selected_index"))
                  for slider, stack in zip(sliders, stacks)]
    _saved_states(box, [live.which, *sliders], functools.partial(live.go_live, box, per_choice, sliders))
    return box
