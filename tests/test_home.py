"""One home address: pyproject.toml's ``[project.urls]`` names it, every other place agrees with
it, and ``python tools/set_home.py OWNER/NAME`` moves the project (README, "Publish" in
CONTRIBUTING.md). The move runs in a temporary copy of the files it touches, never here."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path("tools") / "set_home.py"
OLD = "alexnet-tutorial/alexnet-tutorial"
NEW = "Someone-Else/Another.Book"  # upper case in both: the Pages host is lower case, the rest is not
NEW_BOOK = "https://someone-else.github.io/Another.Book/"


def load_tool(root: Path = ROOT):
    spec = importlib.util.spec_from_file_location(f"set_home_{abs(hash(root))}", root / TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOME = load_tool()
SETUP_CELL_OF = "{} (set-up cell)"


def run_tool(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / TOOL), *args], capture_output=True, text=True, cwd=root,
                          timeout=120)


def copy_repo(dest: Path, extra=()) -> Path:
    """The files the tool reads and writes (and ``extra``), copied to ``dest``."""
    names = [str(TOOL), *HOME.PLACES, *(str(p.relative_to(ROOT)) for p in HOME.notebooks(ROOT)), *extra]
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name)
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


def setup_source(path: Path) -> str:
    return "".join(HOME.source_lines(HOME.setup_cell(json.loads(path.read_text()))))


def test_every_place_names_the_home_that_pyproject_names():
    assert HOME.home() == OLD
    assert HOME.check() == []


def test_the_readme_colab_badge_opens_a_notebook_of_the_book():
    links = re.findall(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/([^)\s]+)",
                       (ROOT / "README.md").read_text())
    assert links and all((ROOT / link).is_file() and link.endswith(".ipynb") for link in links), links


# Each form of the address in each place, and the set-up cell of one notebook.
CASES = [(place, form) for place, forms in HOME.PLACES.items() if place != "pyproject.toml" for form in forms]
CASES += [("book/05_saving.ipynb", "repository")]


@pytest.mark.parametrize(("place", "form"), CASES)
def test_the_check_names_the_one_place_that_disagrees(tmp_path, place, form):
    root = copy_repo(tmp_path)
    path = root / place
    text = path.read_text()
    match = HOME.FORMS[form].search(text)
    assert match, f"{place} has no {form}"
    path.write_text(text[:match.start("owner")] + "someone-else" + text[match.end("owner"):])
    problems = HOME.check(root)
    label = SETUP_CELL_OF.format(place) if place.endswith(".ipynb") else place
    assert problems and all(line.startswith(label + ":") for line in problems), problems
    assert "someone-else" in problems[0]
    result = run_tool(root, "--check")
    assert result.returncode == 1 and label in result.stderr


def test_the_check_names_a_place_that_lost_its_address(tmp_path):
    root = copy_repo(tmp_path)
    readme = root / "README.md"
    readme.write_text(HOME.FORMS["Colab link"].sub("example.org/x/y", readme.read_text()))
    assert HOME.check(root) == ["README.md: names no Colab link (https://colab.research.google.com/github/OWNER/NAME/...)"]


def test_a_changed_home_in_pyproject_makes_every_other_place_disagree(tmp_path):
    root = copy_repo(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(HOME.rewrite(pyproject.read_text(), NEW))
    disagreeing = {line.split(":")[0] for line in HOME.check(root)}
    notebooks = {SETUP_CELL_OF.format(p.relative_to(root)) for p in HOME.notebooks(root)}
    assert disagreeing == (set(HOME.PLACES) - {"pyproject.toml"}) | notebooks


def test_set_home_moves_every_place_and_leaves_the_notebooks_otherwise_byte_identical(tmp_path):
    root = copy_repo(tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    result = run_tool(root, NEW)
    assert result.returncode == 0, result.stderr
    moved = load_tool(root)
    assert moved.home(root) == NEW and moved.check(root) == []

    changed = {p.relative_to(root).as_posix() for p, data in before.items() if p.read_bytes() != data}
    notebooks = {p.relative_to(root).as_posix() for p in HOME.notebooks(root)}
    assert changed == set(HOME.PLACES) | notebooks
    for name in changed:
        text = (root / name).read_text()
        assert OLD not in text and "alexnet-tutorial.github.io" not in text, name
    assert f'"git+https://github.com/{NEW}"' in (root / "book" / "_colab_cell.py").read_text()
    results_url = f"https://raw.githubusercontent.com/{NEW}/main/benchmarks/results/"
    assert results_url in (root / "alexnet_tutorial" / "book.py").read_text()
    assert f"url: https://github.com/{NEW}\n" in (root / "_config.yml").read_text()
    readme = (root / "README.md").read_text()
    assert f"https://colab.research.google.com/github/{NEW}/blob/main/book/02_data.ipynb" in readme
    assert NEW_BOOK in readme
    citation = (root / "CITATION.cff").read_text()
    assert f'repository-code: "https://github.com/{NEW}"' in citation and f'url: "{NEW_BOOK}"' in citation

    setup = (root / "book" / "_colab_cell.py").read_text().rstrip("\n")
    for name in notebooks:
        old, new = (before[root / name].decode()), (root / name).read_text()
        assert setup_source(root / name) == setup, f"{name}: the set-up cell is no longer book/_colab_cell.py"
        differing = [(a, b) for a, b in zip(old.splitlines(), new.splitlines()) if a != b]
        assert len(old.splitlines()) == len(new.splitlines()) and len(differing) == 1, name
        assert differing[0][1] == differing[0][0].replace(OLD, NEW), differing

    again = run_tool(root, NEW)
    assert again.returncode == 0 and "rewrote" not in again.stdout, again.stdout
    back = run_tool(root, OLD)
    assert back.returncode == 0, back.stderr
    assert {p: p.read_bytes() for p in before} == before, "moving there and back did not restore every byte"


@pytest.mark.parametrize("given", ["alexnet-tutorial", "a/b/c", "-bad/name", "owner/", "owner/owner.github.io"])
def test_set_home_refuses_what_is_not_a_project_on_github_and_changes_nothing(tmp_path, given):
    root = copy_repo(tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    result = run_tool(root, given)
    assert result.returncode != 0 and result.stderr.count("\n") <= 2 and "set_home" in result.stderr + result.stdout
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.slow
def test_the_book_rebuilt_after_a_move_links_to_the_new_home(tmp_path):
    """A small book (the introduction and chapter 5) built in the moved copy: its repository,
    issues and Colab links and its set-up cell name the new home, and no page names the old one."""
    root = copy_repo(tmp_path, extra=["book/01_introduction.md", "book/_ext", "book/_templates"])
    (root / "book" / "_static").symlink_to(ROOT / "book" / "_static")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/01_introduction\nchapters:\n  - file: book/05_saving\n")
    assert run_tool(root, NEW).returncode == 0

    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jupyter_book), "build", str(root), "--keep-going"], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    html = root / "_build" / "html"
    page = (html / "book" / "05_saving.html").read_text()
    assert f'href="https://github.com/{NEW}"' in page
    assert f'href="https://github.com/{NEW}/issues/new?' in page
    assert f'href="https://colab.research.google.com/github/{NEW}/blob/main/book/05_saving.ipynb"' in page
    assert f"git+https://github.com/{NEW}" in page
    pages = [p for p in html.rglob("*.html") if "_static" not in p.parts]
    assert pages and not [p.name for p in pages if OLD in p.read_text()]
