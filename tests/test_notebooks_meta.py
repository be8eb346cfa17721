"""The set-up cell every chapter notebook starts with (what makes it run on Colab).

It is the same in every notebook, names the repository the book's ``_config.yml`` names,
and installs the package only where it is missing: here, where it is installed, running
the cell must not call pip; with the package hidden, it must.
"""

from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))

# Runs before the set-up cell: records every way a cell can run pip instead of running it.
RECORD_INSTALLS = r"""
import os, subprocess, sys
_installs = []
def _record(*args, **kwargs):
    _installs.append(" ".join(map(str, args[0])) if args and isinstance(args[0], (list, tuple)) else str(args))
    return subprocess.CompletedProcess(args, 0, "", "")
for _name in ("run", "call", "check_call", "check_output"):
    setattr(subprocess, _name, _record)
os.system = _record
_ip = get_ipython()
_ip.system = _ip.system_raw = _ip.getoutput = _record
_ip.register_magic_function(lambda line: _installs.append("pip " + line), "line", "pip")
_ip.register_magic_function(lambda line: _installs.append("uv " + line), "line", "uv")
"""
HIDE_PACKAGE = "sys.modules['alexnet_tutorial'] = None  # as if it were not installed\n"


def first_code_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(cell.source for cell in nb.cells if cell.cell_type == "code")


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].removesuffix(".git")


def installs(setup: str, hide: bool) -> list[str]:
    """The pip calls the set-up cell makes, run in a fresh kernel without running them."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(RECORD_INSTALLS + (HIDE_PACKAGE if hide else "")),
                nbformat.v4.new_code_cell(setup),
                nbformat.v4.new_code_cell("print('INSTALLS', _installs)")]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=hide).execute()
    return [o.get("text", "") for o in nb.cells[2].outputs if "INSTALLS" in o.get("text", "")]


needs_notebooks = pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in book/ yet")


@needs_notebooks
def test_every_notebook_starts_with_the_same_setup_cell():
    cells = {path.name: first_code_cell(path) for path in NOTEBOOKS}
    first = cells[NOTEBOOKS[0].name]
    differ = [name for name, source in cells.items() if source != first]
    assert not differ, f"first code cell differs from {NOTEBOOKS[0].name} in: {', '.join(differ)}"


@needs_notebooks
def test_setup_cell_installs_from_the_books_repository():
    source = first_code_cell(NOTEBOOKS[0])
    assert repository_url() in source, f"the set-up cell does not name {repository_url()}"
    assert "pip" in source


@needs_notebooks
def test_setup_cell_installs_only_when_the_package_is_missing():
    setup = first_code_cell(NOTEBOOKS[0])
    present = installs(setup, hide=False)
    assert present == ["INSTALLS []\n"], f"with the package installed the cell still ran: {present}"
    missing = installs(setup, hide=True)
    assert missing and repository_url() in missing[0], f"the cell did not install the missing package: {missing}"
