"""What a reader of the built book sees of each notebook, checked on the notebooks themselves:
every visible code cell is code to read (bookkeeping sits in cells whose input the page hides),
fits the desktop column, and every figure has a number and a caption.

A cell tagged ``remove-cell`` does not appear on the page; one tagged ``remove-input`` shows only
its output. The browser test (tests/test_browser.py) checks the same things on the rendered pages.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
MARKDOWN_PAGES = sorted(BOOK.glob("*.md"))
MAX_LINE = 84  # characters: the desktop column (1366 px wide window) holds 87 of the code font
HIDDEN_INPUT = {"remove-cell", "remove-input"}
# What only the book's own machinery needs: the test switch, temporary paths, CI words.
OFF_THE_PAGE = re.compile(r"ALEXNET_TUTORIAL_QUICK|/tmp/|\bCI\b|continuous integration|quick mode|test suite",
                          re.IGNORECASE)
BOOKKEEPING = re.compile(r"\b(glue|claim|table)\(|Markdown\(")


def cells(path: Path):
    return nbformat.read(path, as_version=4).cells


def tags(cell) -> set[str]:
    return set(cell.metadata.get("tags", []))


def input_shown(cell) -> bool:
    return cell.cell_type == "markdown" or not (tags(cell) & HIDDEN_INPUT)


def output_shown(cell) -> bool:
    return "remove-cell" not in tags(cell) and "remove-output" not in tags(cell)


def output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts += [data.get(m, "") for m in ("text/plain", "text/markdown", "text/html") if isinstance(data.get(m), str)]
    return "\n".join(parts)


def has_figure(cell) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS + MARKDOWN_PAGES, ids=lambda p: p.name)
def test_the_page_shows_none_of_the_books_machinery(path):
    if path.suffix == ".md":
        shown = [path.read_text()]
    else:
        shown = [c.source for c in cells(path)[1:] if input_shown(c)]  # the Colab cell is collapsed
        shown += [output_text(c) for c in cells(path) if c.cell_type == "code" and output_shown(c)]
    found = sorted({m.group(0) for text in shown for m in OFF_THE_PAGE.finditer(text)})
    assert not found, f"{path.name} shows {found} to its readers"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_bookkeeping_lives_in_cells_the_page_hides(path):
    shown = [i for i, c in enumerate(cells(path)) if c.cell_type == "code" and input_shown(c)
             and BOOKKEEPING.search(c.source)]
    assert not shown, f"{path.name}: cells {shown} glue, check claims or build tables in view of the reader"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_visible_code_fits_the_desktop_column(path):
    code = [(i, c) for i, c in enumerate(cells(path)) if c.cell_type == "code"]
    # The first code cell is the Colab set-up (book/_colab_cell.py), folded away on the page.
    long = [f"cell {i}: {line[:40]}..." for i, c in code[1:]
            if input_shown(c) for line in c.source.splitlines() if len(line) > MAX_LINE]
    assert not long, f"{path.name}: lines over {MAX_LINE} characters:\n" + "\n".join(long)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_a_number_and_a_caption(path):
    bare, names = [], []
    for i, c in enumerate(cells(path)):
        if c.cell_type == "code" and has_figure(c) and output_shown(c):
            figure = c.metadata.get("mystnb", {}).get("figure", {})
            if not (figure.get("caption") and figure.get("name")):
                bare.append(i)
            names.append(figure.get("name"))
    assert not bare, f"{path.name}: cells {bare} show a figure without a caption and a name"
    assert all(names.count(n) == 1 for n in names), f"{path.name}: figure names repeat: {names}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_cell_shows_at_most_one_figure(path):
    many = [i for i, c in enumerate(cells(path)) if c.cell_type == "code"
            and sum("image/png" in out.get("data", {}) for out in c.get("outputs", [])) > 1]
    assert not many, f"{path.name}: cells {many} show more than one figure under one caption"


def test_every_figure_the_prose_refers_to_exists():
    names = {c.metadata.get("mystnb", {}).get("figure", {}).get("name") for p in NOTEBOOKS for c in cells(p)}
    prose = "\n".join(c.source for p in NOTEBOOKS for c in cells(p) if c.cell_type == "markdown")
    prose += "\n".join(p.read_text() for p in MARKDOWN_PAGES)
    cited = set(re.findall(r"\{numref\}`(?:[^`<]*<)?(fig-[\w-]+)>?`", prose))
    assert cited <= names, f"the prose refers to figures that no cell names: {sorted(cited - names)}"


def test_the_checks_catch_what_they_look_for(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# set-up"),
                nbformat.v4.new_code_cell("QUICK = os.environ['ALEXNET_TUTORIAL_QUICK']\nglue('x', 1)"),
                nbformat.v4.new_code_cell("x = 1  # " + "a" * 90)]
    nb.cells[2].outputs = [nbformat.v4.new_output("display_data", {"image/png": "iVBORw0KGgo="}),
                           nbformat.v4.new_output("display_data", {"image/png": "iVBORw0KGgo="})]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    for check in (test_the_page_shows_none_of_the_books_machinery, test_bookkeeping_lives_in_cells_the_page_hides,
                  test_visible_code_fits_the_desktop_column, test_every_figure_has_a_number_and_a_caption,
                  test_a_cell_shows_at_most_one_figure):
        with pytest.raises(AssertionError):
            check(path)
    nb.cells[1].metadata["tags"] = ["remove-cell"]
    nbformat.write(nb, path)
    test_the_page_shows_none_of_the_books_machinery(path)
    test_bookkeeping_lives_in_cells_the_page_hides(path)


def minutes_to_read(text: str) -> int:
    found = re.search(r"\*\*Time to read:\*\*\s*(\d+) minutes", text)
    assert found, "no '**Time to read:** N minutes' line"
    return int(found.group(1))


def test_the_introductions_reading_times_are_the_chapters_own():
    intro = (BOOK / "01_introduction.md").read_text(encoding="utf-8")
    chapter_list = intro.split("## The chapters", 1)[1].split("\n## ", 1)[0]
    listed = dict(re.findall(r"\]\((\d\d_\w+)\.ipynb\):[^()]*\((\d+) minutes", chapter_list))
    chapters = {path.stem: path for path in NOTEBOOKS}
    assert set(listed) == set(chapters), "the introduction's chapter list names every chapter once"
    total = minutes_to_read(intro)
    for stem, path in chapters.items():
        first = "\n".join("".join(c.source) for c in cells(path) if c.cell_type == "markdown")
        assert int(listed[stem]) == minutes_to_read(first), f"{stem}: the introduction says {listed[stem]} minutes"
    whole = total + sum(int(m) for m in listed.values())
    stated = re.search(r"about (\d+) hours for the whole book", intro)
    assert stated and abs(whole / 60 - int(stated.group(1))) <= 0.25, f"the chapters add up to {whole} minutes"
