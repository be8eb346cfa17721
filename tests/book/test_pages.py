"""What keeps the rendered pages honest and readable: prose that quotes a computed number takes
it from the cell that computes it (myst-nb's glue), short cells, highlighted source, and the
set-up cell collapsed on the page."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
PAGES = NOTEBOOKS + sorted(BOOK.glob("*.md"))
MAX_CELL_LINES = 20
# {glue}`name`, {glue:text}`name:.2f`, {glue:text}`other_doc::name` and ```{glue:figure} name
ROLE = re.compile(r"\{glue(?::\w+)?\}`(?:([\w/.-]+)::)?([\w-]+)(?::[^`]*)?`")
DIRECTIVE = re.compile(r"^[`:]{3,}\{glue(?::\w+)?\}\s+(?:([\w/.-]+)::)?([\w-]+)", re.MULTILINE)


def glued(path: Path) -> dict[str, str]:
    """Every name a notebook's outputs glue, with the text it glued."""
    names = {}
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook")
            if meta:
                data = out.get("data", {})
                names[meta["name"]] = str(data.get(meta.get("mime_prefix", "") + "text/plain", ""))
    return names


def prose(path: Path) -> str:
    if path.suffix == ".md":
        return path.read_text()
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


def references(text: str) -> list[tuple[str | None, str]]:
    return [m.groups() for m in ROLE.finditer(text)] + [m.groups() for m in DIRECTIVE.finditer(text)]


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_glued_number_the_prose_quotes_is_computed_on_its_page(path):
    missing = []
    for doc, name in references(prose(path)):
        source = (path.parent / doc).with_suffix(".ipynb") if doc else path
        if not source.exists() or name not in glued(source):
            missing.append(f"{doc + '::' if doc else ''}{name}")
    assert not missing, f"{path.name} quotes glued values no cell computes: {', '.join(missing)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_does_not_type_a_glued_number_by_hand(path):
    text = ROLE.sub("", prose(path))
    values = {name: value.strip("'\"") for name, value in glued(path).items()}
    typed = [f"{name}={value}" for name, value in values.items()
             if re.search(r"\d", value) and len(value) >= 4
             and re.search(rf"(?<![\d.]){re.escape(value)}(?![\d])", text)]
    assert not typed, f"{path.name}'s prose types these glued values by hand: {', '.join(typed)}"


def test_the_glue_check_catches_a_name_no_cell_computes(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Accuracy {glue:text}`accuracy` after {glue:text}`epochs:d` epochs.")]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(AssertionError, match="accuracy, epochs"):
        test_every_glued_number_the_prose_quotes_is_computed_on_its_page(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_short(path):
    long = [i for i, c in enumerate(nbformat.read(path, as_version=4).cells)
            if c.cell_type == "code" and len(c.source.splitlines()) > MAX_CELL_LINES]
    assert not long, f"{path.name}: cells {long} have more than {MAX_CELL_LINES} lines"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_package_source_is_shown_highlighted(path):
    sources = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    plain = [s for s in sources if "print(inspect.getsource" in s]
    assert not plain, f"{path.name} prints package source as plain text; use alexnet_tutorial.book.show_source"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_is_collapsed_on_the_page(path):
    first = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "hide-input" in first.metadata.get("tags", [])


def test_benchmark_results_are_read_from_the_checkout_or_a_copy_beside_the_notebook(tmp_path, monkeypatch):
    from alexnet_tutorial import book

    assert book.benchmark_result("speed-cpu.json") == ROOT / "benchmarks" / "results" / "speed-cpu.json"
    # Installed without the repository (Colab): a copy fetched earlier beside the notebook is used.
    monkeypatch.setattr(book, "RESULTS", tmp_path / "no-checkout")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmark-results").mkdir()
    (tmp_path / "benchmark-results" / "speed-cpu.json").write_text("{}")
    assert book.benchmark_result("speed-cpu.json").read_text() == "{}"


def test_a_benchmark_result_that_cannot_be_had_is_one_clear_error(tmp_path, monkeypatch):
    import urllib.request

    from alexnet_tutorial import book

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(book, "RESULTS", tmp_path / "no-checkout")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="speed-cpu.json is not in this installation.*no network"):
        book.benchmark_result("speed-cpu.json")
    assert not (tmp_path / "benchmark-results").exists()  # nothing half-written left behind
