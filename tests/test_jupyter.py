"""After ``pip install -e ".[dev]"`` the notebooks work in JupyterLab as the book shows them:
the widgets extension is there and enabled, and tqdm.auto draws a widget progress bar."""

import re
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

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
