"""Build the book's site: the English edition in ``_build/html``, the Chinese one in ``_build/html/zh``.

    python book/build.py              # both editions, offline, warnings as errors
    python book/build.py --catalogs   # after changing English prose: refresh the Chinese catalogues

Both editions are Jupyter Book builds of the same committed notebooks, with the settings of
``_config.yml``; this script adds each edition's own (language, title, footer, figure labels,
and the link to the same page in the other edition) in a generated config under
``_build/editions/``. The Chinese text comes from the gettext catalogues in
``book/locales/zh_CN/LC_MESSAGES/book/``, one per page; CONTRIBUTING.md, "Translating", says how
to update them. ``--catalogs`` extracts the English messages (``_build/editions/gettext``) and merges them
into those catalogues with sphinx-intl: a new message arrives untranslated, a changed one fuzzy,
and ``tests/book/test_translation.py`` fails until each has its Chinese again.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
EDITIONS = ROOT / "_build" / "editions"
LOCALES = ROOT / "book" / "locales"
CHINESE = "zh_CN"

# What differs between the editions, beyond the catalogues.
SETTINGS = {
    "en": {
        "sphinx": {"config": {
            "language": "en",
            "book_edition_switch": {"href": "zh/", "label": "中文", "lang": "zh-CN",
                                    "title": "本页的中文版"},
        }},
    },
    "zh": {
        "title": "在 MNIST 上正确训练 AlexNet",
        "author": "alexnet-tutorial 作者",
        "html": {"extra_footer": (
            '<p>文字与插图：<a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a>。'
            '代码：<a href="https://opensource.org/license/mit">MIT</a>。'
            "MNIST 手写数字：CC BY-SA 3.0（LeCun、Cortes 和 Burges）。</p>\n")},
        "sphinx": {"config": {
            "language": CHINESE,
            "numfig_format": {"figure": "图 %s", "table": "表 %s", "code-block": "代码 %s"},
            "book_edition_switch": {"href": "../", "label": "English", "lang": "en",
                                    "title": "This page in English"},
        }},
    },
}


def merged(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def edition_config(edition: str) -> Path:
    """``_config.yml`` with the edition's settings, written where Jupyter Book can read it."""
    config = merged(yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")), SETTINGS[edition])
    # Jupyter Book resolves local extensions against the config file's folder.
    extensions = config["sphinx"]["local_extensions"]
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in extensions.items()}
    EDITIONS.mkdir(parents=True, exist_ok=True)
    path = EDITIONS / f"_config.{edition}.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def jupyter_book(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT), *args]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        sys.exit(f"error: the book did not build ({' '.join(args)}); see the messages above")


def build(edition: str) -> Path:
    """One edition: English into ``_build/html``, Chinese into ``_build/editions/zh``, then ``_build/html/zh``."""
    config = str(edition_config(edition))
    if edition == "en":
        jupyter_book("--config", config, "-W", "-n", "--keep-going")
        return HTML
    out = EDITIONS / edition
    jupyter_book("--config", config, "--path-output", str(out), "-W", "-n", "--keep-going")
    target = HTML / edition
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out / "_build" / "html", target)
    return target


def catalogs() -> None:
    """Extract the English messages and merge them into the Chinese catalogues."""
    out = EDITIONS / "gettext"  # its own doctrees: Sphinx keeps a gettext build's apart from HTML's
    shutil.rmtree(out, ignore_errors=True)
    jupyter_book("--config", str(edition_config("en")), "--path-output", str(out),
                 "--builder", "custom", "--custom-builder", "gettext", "-W", "--keep-going")
    pot = out / "_build" / "gettext"
    intl = [str(Path(sys.executable).with_name("sphinx-intl")), "update", "--pot-dir", str(pot),
            "--locale-dir", str(LOCALES), "--language", CHINESE, "--line-width", "-1", "--no-obsolete", "--jobs", "1"]
    if subprocess.run(intl, cwd=ROOT).returncode != 0:
        sys.exit("error: sphinx-intl could not update the catalogues; see the messages above")
    print(f"catalogues updated in {LOCALES.relative_to(ROOT)}/{CHINESE}: translate every empty or fuzzy message, "
          "then run python book/build.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogs", action="store_true",
                        help="refresh the Chinese catalogues from the English text instead of building")
    parser.add_argument("--edition", choices=["en", "zh"], action="append",
                        help="build only this edition (default: both)")
    args = parser.parse_args(argv)
    if args.catalogs:
        catalogs()
        return
    for edition in args.edition or ["en", "zh"]:
        print(f"edition {edition}: {build(edition)}")


if __name__ == "__main__":
    main()
