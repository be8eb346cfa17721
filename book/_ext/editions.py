"""The book in two languages from one set of executed notebooks.

Sphinx's translation workflow (gettext catalogues in ``locales/``, a build with ``language``
set) translates the prose. What the notebooks' code printed stays as it ran, in both editions:
this extension marks the text inside cell outputs as not for translation, except what the book
wrote there itself: figure captions (from the cells' metadata) and the words in the tables a
cell builds (``alexnet_tutorial.book.table``): its headers, its rows' labels and its cells of
words. A cell that holds a printed value is left alone (see ``_prose_in_a_table``).

In a translated paragraph, ``{glue:text}`` shows the notebook's value as the English one does,
its English words put in the translation's (``PasteTextInATranslation``).

The theme's words on the Chinese pages come from Sphinx and the themes, and where they have
none, from the book's own ``sphinx.po`` and ``booktheme.po`` beside the pages' catalogues.

It also puts a link to the same page in the other edition at the top of every page, from the
``book_edition_switch`` setting that ``book/build.py`` gives each edition's build:
``href`` (the other edition's root, relative to this one's: ``zh/`` from the English pages,
``../`` from the Chinese ones in ``zh/``), ``label`` (the other language's name in that
language), ``lang`` and ``title``. Without the setting (a plain ``jupyter-book build``) no link is shown.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from myst_nb.core.variables import format_plain_text
from myst_nb.ext.glue.crossref import read_glue_cache
from myst_nb.ext.glue.domain import NbGlueDomain
from myst_nb.ext.glue.roles import PasteTextRole
from myst_nb.ext.glue.utils import glue_warning
from sphinx import locale
from sphinx.transforms import SphinxTransform

# Words are what make a table cell the book's prose rather than a printed value.
_WORDS = re.compile(r"[A-Za-z]{3,}")


def _is_output(node: nodes.Node) -> bool:
    return isinstance(node, nodes.container) and "cell_output" in node.get("classes", [])


def _prose_in_a_table(node: nodes.Element) -> bool:
    """A header, a row's label, or a cell of words: what the book wrote.

    A cell of figures, code or maths with a word or two (``99.47``, ``linear 512 → 10``,
    ``9 (7 times)``) is a printed value: translating it would tie the catalogue to one run's
    numbers. A cell of three words or more (``L2 penalty on conv and linear weights``) is prose."""
    entry = node.parent
    if not isinstance(entry, nodes.entry):
        return False
    words = "".join(child.astext() for child in node.children
                    if not isinstance(child, (nodes.literal, nodes.math)))
    if not _WORDS.search(words):
        return False
    row = entry.parent
    if isinstance(row.parent, nodes.thead) or row.index(entry) == 0:  # a header or a row's label
        return True
    return not any(char.isdigit() for char in words) or len(_WORDS.findall(words)) >= 3


class KeepOutputsAsTheyRan(SphinxTransform):
    """Mark every text inside a cell's output untranslatable but captions and table prose."""

    default_priority = 5  # before Sphinx's i18n transforms (10, 20) and its message extraction

    def apply(self, **kwargs) -> None:
        for output in self.document.findall(_is_output):
            for node in output.findall(nodes.TextElement):
                if isinstance(node, nodes.caption) or _prose_in_a_table(node):
                    continue
                node["translatable"] = False


class PasteTextInATranslation(PasteTextRole):
    """``{glue:text}`key``` inside a translated message.

    Sphinx parses a translated message as a document of its own, which has none of the
    notebook's glued values, so MyST-NB would find no ``key``. Here the value is read from the
    notebook's saved glue data (which MyST-NB writes while it reads the notebook, before the
    translation) and then put in the edition's language by the rules of ``book_glued_text``:
    ``{key: [[pattern, replacement], ...]}``, applied in order with ``re.sub``. The glued text
    is what the code printed; the rules only turn its few English words ("seventeen",
    "slower", "4 of 5") into the words of the translation.
    """

    def run(self):
        if "nb_renderer" in self.document:  # the notebook's own prose: MyST-NB as usual
            return super().run()
        env = self.document.settings.env
        key, _, spec = self.text.partition(":")
        output = read_glue_cache(env.mystnb_config.output_folder, env.docname).get(key)
        if output is None or "text/plain" not in output["data"]:
            return [], [glue_warning(f"no glued text {key!r} in {env.docname}", self.document, self.line)]
        text = format_plain_text(output["data"]["text/plain"], spec or "s")
        text = translate_glued(text, env.config.book_glued_text.get(key, []))
        node = nodes.inline(text, text, classes=["pasted-text"])
        self.set_source_info(node)
        return [node], []


def translate_glued(text: str, rules) -> str:
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text)
    return text


class GlueInTranslations(NbGlueDomain):
    roles = {**NbGlueDomain.roles, "text": PasteTextInATranslation()}


def _edition_switch(app, pagename, templatename, context, doctree) -> None:
    switch = app.config.book_edition_switch
    if not switch:
        context["edition_switch"] = None
        return
    up = "../" * pagename.count("/")
    context["edition_switch"] = {"href": f"{up}{switch['href']}{pagename}.html",
                                 "label": switch["label"], "lang": switch["lang"],
                                 "title": switch["title"]}


def _theme_words(app) -> None:
    """The book theme's words that its own catalogue leaves in English, from the book's
    ``booktheme.po`` (Sphinx reads the book's ``sphinx.po`` for the other themes' by itself)."""
    folders = [str(Path(app.confdir, folder)) for folder in app.config.locale_dirs]
    locale.init(folders, app.config.language, "booktheme")


def setup(app):
    app.add_transform(KeepOutputsAsTheyRan)
    app.add_domain(GlueInTranslations, override=True)
    app.add_config_value("book_edition_switch", {}, "html", types=[dict])
    app.add_config_value("book_glued_text", {}, "env", types=[dict])
    app.connect("html-page-context", _edition_switch)
    app.connect("builder-inited", _theme_words)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
