"""Move the project to another GitHub home, or check that every copy of its address agrees.

    python tools/set_home.py OWNER/NAME   # rewrite every place to github.com/OWNER/NAME
    python tools/set_home.py --check      # list the places that disagree with pyproject.toml

The home is the ``Repository`` address in pyproject.toml's ``[project.urls]``. Other places
need a copy of it because they are read where pyproject.toml is not: the book's _config.yml
(its repository, issues and Colab links), the set-up cell that opens every notebook (what
Colab installs), the address chapters download benchmark results from (alexnet_tutorial/book.py),
README's badges and the book's address (GitHub Pages: https://OWNER.github.io/NAME/), and
CITATION.cff. In the notebooks only the set-up cell's source changes, byte for byte: outputs
and the rest of the file stay as they are, so nbval's comparison still holds. Standard library
only; run it with any Python 3.11 or newer.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

OWNER = r"(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
NAME = r"(?P<name>[A-Za-z0-9_.-]+?)"
END = r"(?=\.git\b|[/\"'\s)\]>#?\\]|$)"
# Each form an address takes, by what it is for; each names OWNER and NAME.
FORMS = {
    "repository": re.compile(rf"(?<![\w.-])github\.com/{OWNER}/{NAME}{END}"),
    "raw file": re.compile(rf"(?<![\w.-])raw\.githubusercontent\.com/{OWNER}/{NAME}{END}"),
    "Colab link": re.compile(rf"(?<![\w.-])colab\.research\.google\.com/github/{OWNER}/{NAME}{END}"),
    "book address": re.compile(rf"(?<=//){OWNER}\.github\.io/{NAME}{END}"),
}
# Where the address is written, and the forms each place must have (a place that lost one fails too).
PLACES = {
    "pyproject.toml": ("repository", "book address"),
    "_config.yml": ("repository",),
    "book/_colab_cell.py": ("repository",),
    "alexnet_tutorial/book.py": ("raw file",),
    "README.md": ("Colab link", "book address"),
    "CITATION.cff": ("repository", "book address"),
}
NOTEBOOKS = "book/*.ipynb"  # and the set-up cell of each notebook: ("repository",)
EXAMPLE = {"repository": "https://github.com/OWNER/NAME", "raw file": "https://raw.githubusercontent.com/OWNER/NAME/...",
           "Colab link": "https://colab.research.google.com/github/OWNER/NAME/...",
           "book address": "https://OWNER.github.io/NAME/"}


def pages_host(owner: str) -> str:
    return owner.lower()  # GitHub Pages serves https://<owner, lower case>.github.io/<name>/


def home(root: Path = ROOT) -> str:
    """``OWNER/NAME`` from pyproject.toml's ``[project.urls] Repository``."""
    urls = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("urls", {})
    match = FORMS["repository"].search(urls.get("Repository", ""))
    if not match:
        raise SystemExit("set_home: pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return f"{match['owner']}/{match['name']}"


def parse_home(text: str) -> str:
    """``OWNER/NAME`` as given on the command line, or SystemExit with a one-line reason."""
    owner, _, name = text.strip().removeprefix("https://github.com/").removesuffix(".git").partition("/")
    if not (re.fullmatch(OWNER, owner) and re.fullmatch(NAME, name)) or name in (".", ".."):
        raise SystemExit(f"set_home: expected OWNER/NAME as on GitHub (letters, digits, '-', and in NAME "
                         f"also '.' and '_'), got {text!r}")
    if name.lower() == f"{owner.lower()}.github.io":
        raise SystemExit(f"set_home: {name} is a user or organisation site, served at the root of the address; "
                         "the book expects a project site, https://OWNER.github.io/NAME/")
    return f"{owner}/{name}"


def named(text: str, forms) -> list[tuple[str, str, str]]:
    """``(form, OWNER/NAME, the URL text)`` for every address in ``text`` of one of ``forms``."""
    found = []
    for form in forms:
        for m in FORMS[form].finditer(text):
            found.append((form, f"{m['owner']}/{m['name']}", m[0]))
    return found


def agrees(form: str, address: str, want: str) -> bool:
    if form == "book address":
        owner, name = want.split("/")
        return address == f"{pages_host(owner)}/{name}"
    return address == want


def rewrite(text: str, want: str) -> str:
    """``text`` with every address of every form moved to ``want``."""
    owner, name = want.split("/")

    def moved(m: re.Match, new_owner: str) -> str:
        at = m.start()
        return (m[0][:m.start("owner") - at] + new_owner + m[0][m.end("owner") - at:m.start("name") - at]
                + name + m[0][m.end("name") - at:])

    for form, pattern in FORMS.items():
        new_owner = pages_host(owner) if form == "book address" else owner
        text = pattern.sub(lambda m, o=new_owner: moved(m, o), text)
    return text


def setup_cell(notebook: dict) -> dict:
    """The set-up cell: a notebook's first code cell (book/_colab_cell.py's copy)."""
    return next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")


def source_lines(cell: dict) -> list[str]:
    source = cell["source"]
    return source.splitlines(keepends=True) if isinstance(source, str) else list(source)


def rewrite_notebook(raw: str, want: str, path: str) -> str:
    """The notebook text with only its set-up cell's source moved to ``want``, every other byte kept.

    Each changed line of the source is replaced where nbformat wrote it (as a JSON string),
    and the result must parse to the same notebook with only that source changed."""
    notebook = json.loads(raw)
    cell = setup_cell(notebook)
    start = raw.index('"cell_type": "code"')
    new_raw = raw
    for line in source_lines(cell):
        moved = rewrite(line, want)
        if moved != line:
            old_json, new_json = json.dumps(line, ensure_ascii=False), json.dumps(moved, ensure_ascii=False)
            at = new_raw.find(old_json, start)
            if at < 0:
                raise SystemExit(f"set_home: {path}: cannot find the set-up cell's line {line.strip()!r} as written")
            new_raw = new_raw[:at] + new_json + new_raw[at + len(old_json):]
    expected = json.loads(raw)
    lines = [rewrite(line, want) for line in source_lines(setup_cell(expected))]
    setup_cell(expected)["source"] = lines if isinstance(cell["source"], list) else "".join(lines)
    if json.loads(new_raw) != expected:
        raise SystemExit(f"set_home: {path}: rewriting the set-up cell would change more than its source; "
                         "nothing written")
    return new_raw


def notebooks(root: Path) -> list[Path]:
    return sorted(root.glob(NOTEBOOKS))


def check(root: Path = ROOT) -> list[str]:
    """One line for every place that names another home than pyproject.toml, or lacks one it should name."""
    want = home(root)
    problems = []
    texts = {place: ((root / place).read_text() if (root / place).exists() else None, forms)
             for place, forms in PLACES.items()}
    for path in notebooks(root):
        source = "".join(source_lines(setup_cell(json.loads(path.read_text()))))
        texts[f"{path.relative_to(root)} (set-up cell)"] = (source, ("repository",))
    for place, (text, forms) in texts.items():
        if text is None:
            problems.append(f"{place}: missing")
            continue
        found = named(text, FORMS)
        for form, address, url in found:
            if not agrees(form, address, want):
                problems.append(f"{place}: {url} names {address}, pyproject.toml names {want}")
        for form in forms:
            if not any(f == form for f, _, _ in found):
                problems.append(f"{place}: names no {form} ({EXAMPLE[form]})")
    return problems


def move(want: str, root: Path = ROOT) -> list[str]:
    """Rewrites every place to ``want``; returns the files it changed."""
    changed = []
    for place in PLACES:
        path = root / place
        text = path.read_text()
        if rewrite(text, want) != text:
            path.write_text(rewrite(text, want))
            changed.append(place)
    for path in notebooks(root):
        raw = path.read_text()
        new = rewrite_notebook(raw, want, str(path.relative_to(root)))
        if new != raw:
            path.write_text(new)
            changed.append(str(path.relative_to(root)))
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("home", nargs="?", metavar="OWNER/NAME", help="the new home on GitHub")
    parser.add_argument("--check", action="store_true", help="only list the places that disagree")
    args = parser.parse_args(argv)
    if args.check == bool(args.home):
        parser.error("give OWNER/NAME, or --check")
    if args.home:
        want = parse_home(args.home)
        for place in move(want):
            print(f"rewrote {place}")
        print(f"home: https://github.com/{want}, book: https://{pages_host(want.split('/')[0])}.github.io/"
              f"{want.split('/')[1]}/")
    problems = check()
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"set_home: {len(problems)} place(s) disagree with pyproject.toml; "
              "`python tools/set_home.py OWNER/NAME` rewrites them all", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
