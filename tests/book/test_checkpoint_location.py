"""Where the book keeps chapter 4's checkpoint: a quick run never replaces a full run's, and
the test suite writes it into a temporary folder, never into the book."""

import os
from pathlib import Path

import nbformat
import torch

from alexnet_tutorial import book

ROOT = Path(__file__).resolve().parents[2]


def test_quick_and_full_runs_keep_separate_checkpoints(monkeypatch):
    monkeypatch.delenv(book.CHECKPOINTS_ENV, raising=False)
    full, quick = book.checkpoint_path(quick=False), book.checkpoint_path(quick=True)
    assert full == Path("checkpoints/alexnet.pt")  # what book/execute.py's full run writes and reads
    assert quick.parent != full.parent and quick.name == full.name  # alexnet.best.pt goes beside each
    monkeypatch.setenv(book.QUICK_ENV, "1")
    assert book.checkpoint_path() == quick
    monkeypatch.setenv(book.QUICK_ENV, "0")
    assert book.checkpoint_path() == full


def test_the_variable_chooses_the_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(book.CHECKPOINTS_ENV, str(tmp_path))
    assert book.checkpoint_path(quick=True) == book.checkpoint_path(quick=False) == tmp_path / "alexnet.pt"


def test_the_test_session_keeps_checkpoints_out_of_the_source_tree():
    folder = Path(os.environ[book.CHECKPOINTS_ENV]).resolve()  # set by the root conftest.py
    assert folder.is_dir() and ROOT not in folder.parents
    assert book.checkpoint_path().parent.resolve() == folder


def test_the_later_chapters_read_what_chapter_4_wrote(monkeypatch, tmp_path):
    monkeypatch.setenv(book.CHECKPOINTS_ENV, str(tmp_path))
    torch.save({}, tmp_path / "alexnet.pt")  # chapter 4's output; trained_checkpoint does not open it
    lines = []
    assert book.trained_checkpoint(quick=True, log=lines.append) == tmp_path / "alexnet.pt"
    assert lines == [f"using the trained network in {tmp_path / 'alexnet.pt'}"]


def test_no_notebook_names_a_checkpoint_path_of_its_own():
    # A literal path in a cell would bypass checkpoint_path and write or read the full run's file.
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                code = "\n".join(line.split("#")[0] for line in cell.source.splitlines())  # comments may say it
                assert "checkpoints" not in code, f"{path.name}: {cell.source}"
    chapter4 = "\n".join(c.source for c in nbformat.read(ROOT / "book" / "04_training.ipynb", as_version=4).cells)
    assert "checkpoint_path(" in chapter4


def test_the_test_session_runs_chapter_4_before_the_chapters_that_read_its_checkpoint(request):
    # The root conftest.py reorders the collected notebooks; otherwise chapter 3 would train a
    # fallback run first, the same run chapter 4 then trains again.
    from types import SimpleNamespace

    reorder = request.config.pluginmanager.get_plugin(str(ROOT / "conftest.py")).pytest_collection_modifyitems
    names = ["tests/test_a.py", "book/02_data.ipynb", "book/02_data.ipynb", "book/03_model.ipynb",
             "book/04_training.ipynb", "book/04_training.ipynb", "book/05_saving.ipynb", "tests/test_b.py"]
    items = [SimpleNamespace(path=Path(name), cell=k) for k, name in enumerate(names)]
    reorder(None, None, items)
    assert [item.cell for item in items] == [0, 4, 5, 1, 2, 3, 6, 7]  # each notebook's cells stay in order
