"""The book in two languages from one set of executed notebooks.

Sphinx's translation workflow (gettext catalogues in ``locales/``, a build with ``language``
set) translates the prose. What the notebooks' code printed stays as it ran, in both editions:
this extension marks the text inside cell outputs as not for translation, except what the book
wrote there itself: figure captions (from the cells' metadata) and the words in the tables a
cell builds (``alexnet_tutorial.book.table``): its headers, its rows' labels and its cells of
words. A cell that holds a printed value is left alone (see ``_prose_in_a_table``).

In a translated paragraph, ``{glue:text}`` shows the notebook's value as in the English one
(``PasteTextInATranslation``).

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
from myst_nb.ext.glue.domain import NbGlueDomain
from myst_nb.ext.glue.roles import PasteTextRole
from sphinx.transforms import SphinxTransform

# Words are what make a table cell the book's prose rather than a printed value.
_WORDS = re.compile(r"[A-Za-z]{2,}")


def _is_output(node: nodes.Node) -> bool:
    return isinstance(node, nodes.container) and "cell_output" in node.get("classes", [])


def _prose_in_a_table(node: nodes.Element) -> bool:
    """A header, a row's label, or a cell of words without figures: what the book wrote.

    A cell of figures, code or maths (``99.47``, ``linear 512 → 10``, ``9 (7 times)``) is a
    printed value: translating it would tie the catalogue to one run's numbers."""
    entry = node.parent
    if not isinstance(entry, nodes.entry):
        return False
    words = "".join(child.astext() for child in node.children
                    if not isinstance(child, (nodes.literal, nodes.math)))
    if not _WORDS.search(words):
        return False
    row = entry.parent
    header, first = isinstance(row.parent, nodes.thead), row.index(entry) == 0
    return header or first or not any(char.isdigit() for char in words)


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
    notebook's glued values; MyST-NB then finds no ``key``. Inside such a message, the key is
    read as ``this-notebook.ipynb::key``, MyST-NB's reference to a notebook's saved glue data,
    which it fills in when the page is written: the same value the English page shows.
    """

    def run(self):
        if "nb_renderer" not in self.document and "::" not in self.text:
            env = self.document.settings.env
            key, _, spec = self.text.partition(":")
            self.text = f"{Path(env.doc2path(env.docname)).name}::{key}:{spec or 's'}"
        return super().run()


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


def setup(app):
    app.add_transform(KeepOutputsAsTheyRan)
    app.add_domain(GlueInTranslations, override=True)
    app.add_config_value("book_edition_switch", {}, "html", types=[dict])
    app.connect("html-page-context", _edition_switch)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
