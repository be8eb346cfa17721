"""After ``pip install -e ".[dev]"`` the notebooks work in JupyterLab as the book shows them:
the widgets extension is there and enabled, tqdm.auto draws a widget progress bar, and the
book's two widgets, run in a kernel, save pictures linked to their controls, show a picture
where widgets cannot show, and answer a change from the front end live."""

import base64
import copy
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# Saved pictures live in ipywidgets 8's Stack; on 7.x (Colab) the widgets are live only,
# which test_widgets.py tests under ipywidgets 7.7 in a subprocess.
needs_stack = pytest.mark.skipif(not hasattr(__import__("ipywidgets"), "Stack"),
                                 reason="saved pictures need ipywidgets 8 (Stack)")

JUPYTER = Path(sys.executable).with_name("jupyter")


def test_jupyterlab_has_the_widgets_extension_enabled():
    result = subprocess.run([str(JUPYTER), "labextension", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # drop the colours
    line = next((ln for ln in text.splitlines() if "@jupyter-widgets/jupyterlab-manager" in ln), None)
    assert line is not None, f"the ipywidgets JupyterLab extension is not installed:\n{text}"
    assert "enabled" in line and "OK" in line, line


def test_tqdm_auto_draws_a_widget_bar_in_a_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from tqdm.auto import tqdm\n"
        "from tqdm.notebook import tqdm as notebook_tqdm\n"
        "print(issubclass(tqdm, notebook_tqdm))\n"
        "for _ in tqdm(range(3)):\n"
        "    pass")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert any(o.get("text", "").strip() == "True" for o in outputs), outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    assert "application/vnd.jupyter.widget-state+json" in nb.metadata.get("widgets", {})


BOTH_WIDGETS = """
import torch
from alexnet_tutorial import widgets
from alexnet_tutorial.model import AlexNet
torch.manual_seed(0)
model, images, labels = AlexNet(width_mult=0.25), torch.randn(6, 1, 28, 28), torch.arange(6)
viewer = widgets.feature_map_viewer(model, images, labels, saved=[1, 2])
explorer = widgets.prediction_explorer(model, images, labels, saved=[0, 3])
display(viewer, explorer)
"""
# What the front end sends when a reader moves a slider: the viewer's, and the explorer's for "all".
MOVE_SLIDERS = """
viewer_slider = viewer.children[0].children[0]
explorer_slider = explorer.children[0].children[1].children[0]
# the viewer's slider is a SelectionSlider (its readout is the test image's number): it syncs index
for box, slider, key in ((viewer, viewer_slider, "index"), (explorer, explorer_slider, "value")):
    slider.set_state({key: 1})
    print("LIVE", len(box.children), box.children[1].value)
"""


def ref(model_id: str) -> str:
    return f"IPY_MODEL_{model_id}"


@needs_stack
def test_book_widgets_save_linked_pictures_and_go_live_in_a_kernel():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(BOTH_WIDGETS), nbformat.v4.new_code_cell(MOVE_SLIDERS)]
    client = NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True)
    with client.setup_kernel():
        client.execute_cell(nb.cells[0], 0)
        client.set_widgets_metadata()  # the state a saved page gets: before any control moved
        state = copy.deepcopy(nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"])
        client.execute_cell(nb.cells[1], 1)
    shown = [o for o in nb.cells[0].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(shown) == 2, nb.cells[0].outputs
    links = [m["state"] for m in state.values() if m["model_name"] == "LinkModel"]
    for output in shown:
        data = output["data"]
        assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")  # the picture before the cell runs
        assert "\n" not in data["text/plain"] and "run this cell" in data["text/plain"]
        box = state[data["application/vnd.jupyter.widget-view+json"]["model_id"]]["state"]
        controls_id, stack_id = (c.removeprefix("IPY_MODEL_") for c in box["children"])
        assert state[stack_id]["model_name"] == "StackModel"
        sources = {tuple(link["source"]) for link in links if link["target"] == [ref(stack_id), "selected_index"]}
        assert len(sources) == 1 and sources <= {(c, t) for c in state[controls_id]["state"]["children"]
                                                 for t in ("index", "value")}, sources
    moved = "".join(o.get("text", "") for o in nb.cells[1].outputs).splitlines()
    # Both now show controls, caption and live picture, at the image the saved slider was on.
    assert moved[0].startswith("LIVE 3 Test image 2,") and moved[1].startswith("LIVE 3 4 of 6: test image 3,"), moved


def test_notebooks_store_the_kernel_name_jupyterlab_shows():
    """A stored display name that differs from the kernel's own marks a notebook modified as it opens."""
    from jupyter_client.kernelspec import get_kernel_spec

    spec = get_kernel_spec("python3")
    notebooks = sorted((Path(__file__).resolve().parents[1] / "book").glob("*.ipynb"))
    stored = {path.name: nbformat.read(path, as_version=4).metadata["kernelspec"] for path in notebooks}
    differ = {name: ks.get("display_name") for name, ks in stored.items()
              if (ks.get("name"), ks.get("display_name")) != ("python3", spec.display_name)}
    assert notebooks and not differ, f"kernel display name is not {spec.display_name!r} in {differ}"
