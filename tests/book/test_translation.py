"""The Chinese edition cannot go stale silently.

The English messages are extracted from the book as it stands (Sphinx's gettext builder, the
way ``python book/build.py --catalogs`` does it) and compared with the Chinese catalogues in
``book/locales/zh_CN/LC_MESSAGES/book/``: every message must have a Chinese translation that is
not fuzzy, keep the markup that makes it work (glued values, figure references, inline code,
maths, link targets), and use the glossary's terms. A changed English sentence becomes a new
message with no translation, and the first test fails until the catalogue is updated
(CONTRIBUTING.md, "Translating").
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

babel_pofile = pytest.importorskip("babel.messages.pofile")

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = ROOT / "book" / "locales" / "zh_CN" / "LC_MESSAGES" / "book"
PAGES = sorted(path.stem for path in CATALOGUES.glob("*.po"))

# English term (a regular expression, read outside code and maths) -> the Chinese term a
# translation must then use: the glossary's, which are d2l-zh's (book/11_glossary.md).
TERMS = {
    r"\bdropout\b": "暂退法",
    r"\bepochs?\b": "迭代周期",
    r"\bpooling\b": "汇聚",
    r"\blabel smoothing\b": "标签平滑",
    # Of the inputs; d2l-zh's batch normalisation is 批量规范化.
    r"(?<!batch )(?<!response )(?<!layer )\bnormalis(?:e|es|ed|ing|ation)\b(?! layers?)": "标准化",
    r"\blearning rates?\b": "学习率",
    r"\bweight decay\b": "权重衰减",
    r"\bfeature maps?\b": "特征图",
    r"\bcheckpoints?\b": "检查点",
    r"\bconvolutions?\b|\bconvolutional\b": "卷积",
}

ROLE = re.compile(r"\{[\w:.-]+\}`[^`]*`")
TITLED = re.compile(r"(\{(?:ref|numref|doc)\}`)[^`<]*<([^`>]+)>`")  # a reference's own words are prose
CODE = re.compile(r"``[^`]+``|`[^`]+`")
MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+\$", re.S)
LINK_TARGET = re.compile(r"\]\(([^)\s]+)\)")


def markup(text: str) -> Counter:
    """The parts of a message that must come through a translation unchanged."""
    roles = ROLE.findall(TITLED.sub(r"\1<\2>`", text))
    rest = ROLE.sub(" ", text)
    return Counter(roles + CODE.findall(rest) + MATH.findall(CODE.sub(" ", rest)) + LINK_TARGET.findall(text))


def prose(text: str) -> str:
    """A message without its roles, code, maths and link targets: what the reader reads as words."""
    for pattern in (ROLE, CODE, MATH):
        text = pattern.sub(" ", text)
    return LINK_TARGET.sub("]", text)


def read(path: Path):
    with path.open("rb") as handle:
        return babel_pofile.read_po(handle)


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def book_build():
    return load("book_build", ROOT / "book" / "build.py")


# Glued values that are names, not words of the prose: a setting, a precision, a unit.
GLUED_NAMES = {"live_fastest", "sweep_precision", "rss_before"}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> tuple[dict[str, set[str]], dict[str, str]]:
    """The English messages of each page, extracted from the book now, and the notebooks'
    glued texts (``key: text``)."""
    out = tmp_path_factory.mktemp("gettext")
    pot = book_build().extract(out) / "book"
    messages = {path.stem: {m.id for m in read(path) if m.id} for path in pot.glob("*.pot")}
    glued = {key: output["data"].get("text/plain", "")
             for path in (out / "_build" / "jupyter_execute").rglob("*.glue.json")
             for key, output in json.loads(path.read_text()).items()}
    shutil.rmtree(out, ignore_errors=True)
    return messages, glued


@pytest.fixture(scope="module")
def english(extracted) -> dict[str, set[str]]:
    return extracted[0]


def test_every_page_has_a_catalogue(english):
    assert sorted(english) == PAGES, "run python book/build.py --catalogs and translate the new page"


@pytest.mark.parametrize("page", PAGES)
def test_every_english_message_has_its_chinese(english, page):
    catalogue = read(CATALOGUES / f"{page}.po")
    missing = [m for m in english[page] if m not in catalogue or not catalogue[m].string]
    fuzzy = [m for m in english[page] if m in catalogue and catalogue[m].string and catalogue[m].fuzzy]
    stale = [m.id for m in catalogue if m.id and m.id not in english[page]]
    assert not missing and not fuzzy and not stale, (
        f"{page}: {len(missing)} messages without Chinese, {len(fuzzy)} fuzzy, {len(stale)} no longer in the "
        f"English (run python book/build.py --catalogs, then translate; CONTRIBUTING.md, 'Translating'). "
        f"First: {(missing + fuzzy + stale)[0][:200]!r}")


@pytest.mark.parametrize("page", PAGES)
def test_translations_keep_the_markup(page):
    broken = [(m.id, m.string) for m in read(CATALOGUES / f"{page}.po")
              if m.id and m.string and markup(m.id) != markup(m.string)]
    assert not broken, "\n".join(
        f"{page}: the translation changes {sorted((markup(i) ^ markup(s)).elements())}:\n  {i[:160]!r}\n  {s[:160]!r}"
        for i, s in broken[:5])


@pytest.mark.parametrize("page", PAGES)
def test_translations_use_the_glossary_terms(page):
    # A message kept in English on purpose (chapter 7's column of the errata in English) is a copy.
    wrong = [(m.id, chinese) for m in read(CATALOGUES / f"{page}.po") if m.id and m.string and m.string != m.id
             for term, chinese in TERMS.items()
             if re.search(term, prose(m.id), re.I) and chinese not in m.string]
    assert not wrong, "\n".join(f"{page}: should use {chinese}: {i[:160]!r}" for i, chinese in wrong[:8])


def test_the_chinese_prose_gets_no_english_word_from_a_glued_value(extracted):
    """A value the code glues into the prose ("seventeen", "slower") is English; the Chinese
    edition turns it Chinese with the rules of book/build.py (GLUED_IN_CHINESE)."""
    build, glued = book_build(), extracted[1]
    editions = load("book_editions", ROOT / "book" / "_ext" / "editions.py")
    used = {key for page in PAGES for m in read(CATALOGUES / f"{page}.po") if m.string
            for key in re.findall(r"\{glue:text\}`([^`:]+)", m.string)}
    english_words = {}
    for key in sorted(used - GLUED_NAMES):
        text = editions.translate_glued(glued[key].strip("'\""), build.GLUED_IN_CHINESE.get(key, []))
        if re.search(r"\b[a-z]{2,}\b", text):
            english_words[key] = text
    assert not english_words, f"add rules to GLUED_IN_CHINESE in book/build.py for {english_words}"


def test_the_checks_catch_a_broken_translation():
    assert markup("the mean {glue:text}`pixel_mean` of `x` ($n$, [ch 2](02_data.ipynb))") == markup(
        "`x` 的均值 {glue:text}`pixel_mean`（$n$，[第 2 章](02_data.ipynb)）")
    assert markup("{numref}`fig-02-samples` shows") != markup("图 2 显示")
    assert markup("{ref}`Further on <sec-03-original>`") == markup("{ref}`后文 <sec-03-original>`")
    assert markup("{ref}`Further on <sec-03-original>`") != markup("{ref}`后文 <sec-03-model>`")
    assert markup("uses `shift=2`") != markup("使用 shift=2")
    assert re.search(r"\bdropout\b", prose("dropout before fc1"), re.I)
    assert not re.search(r"\bdropout\b", prose("`dropout=0.5` is set"), re.I)
