"""The book's chapters keep the shape the style guide asks for, and the toc lists them all."""

import ast
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
CHAPTERS = ["01_introduction.md", "02_data.ipynb", "03_model.ipynb", "04_training.ipynb",
            "05_saving.ipynb", "06_predictions.ipynb", "07_errata.ipynb", "08_speed.ipynb",
            "09_distributed.ipynb"]
TRAINED = ["03_model.ipynb", "04_training.ipynb", "05_saving.ipynb", "06_predictions.ipynb", "07_errata.ipynb",
           "09_distributed.ipynb"]


def markdown(name: str) -> str:
    path = BOOK / name
    if path.suffix == ".md":
        return path.read_text()
    nb = nbformat.read(path, as_version=4)
    return "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")


def code_cells(name: str) -> list[str]:
    nb = nbformat.read(BOOK / name, as_version=4)
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def test_toc_lists_every_chapter_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [entry["file"] for entry in toc["chapters"]]
    assert files[:len(CHAPTERS)] == [f"book/{name.rsplit('.', 1)[0]}" for name in CHAPTERS]


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_the_common_shape(name):
    text = markdown(name)
    for part in ("**What you will learn:**", "**Time to read:**", "## Summary", "## Exercises", "## What's next"):
        assert part in text, f"{name} lacks {part!r}"


@pytest.mark.parametrize("name", [n for n in CHAPTERS if n.endswith(".ipynb")])
def test_first_code_cell_is_the_colab_setup_cell(name):
    assert code_cells(name)[0] == (BOOK / "_colab_cell.py").read_text().rstrip("\n")


@pytest.mark.parametrize("name", TRAINED)
def test_the_quick_switch_is_in_a_cell_the_page_hides(name):
    """Each chapter that trains reads quick_mode() (the tests run it on small subsets) in a cell
    that JupyterLab and Colab show and the built page does not."""
    nb = nbformat.read(BOOK / name, as_version=4)
    switches = [c for c in nb.cells if c.cell_type == "code" and "quick_mode()" in c.source]
    assert switches, f"{name} has no quick switch"
    for cell in switches:
        assert {"remove-cell", "remove-input"} & set(cell.metadata.get("tags", [])), cell.source[:80]


@pytest.mark.parametrize("name", [n for n in CHAPTERS if n.endswith(".ipynb")])
def test_notebooks_import_the_package_without_star(name):
    sources = code_cells(name)
    assert not any("import *" in source for source in sources)
    # A class statement named AlexNet redefines the model (one inside a string, written to a file
    # to show how the post's pickles break, does not).
    classes = [node.name for source in sources for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.ClassDef)]
    assert "AlexNet" not in classes, "the notebook redefines the model"
