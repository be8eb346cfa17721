"""Build the book's site: the English edition in ``_build/html``, the Chinese one in ``_build/html/zh``.

    python book/build.py              # both editions, offline, warnings as errors
    python book/build.py --out DIR    # the site into DIR instead (the browser test builds into a temporary one)
    python book/build.py --catalogs   # after changing English prose: refresh the Chinese catalogues

Both editions are Jupyter Book builds of the same committed notebooks, with the settings of
``_config.yml``; this script adds each edition's own (language, title, footer, figure labels,
and the link to the same page in the other edition) in a generated config. Each edition builds
in its own folder under ``_build/editions/`` (beside ``--out``), where Sphinx keeps what it can
reuse next time; the site is then put together in ``_build/html``. The Chinese text comes from
the gettext catalogues in ``book/locales/zh_CN/LC_MESSAGES/book/``, one per page;
CONTRIBUTING.md, "Translating", says how to update them. ``--catalogs`` extracts the English
messages (``_build/editions/gettext``) and merges them into those catalogues with sphinx-intl:
a new message arrives untranslated, a changed one fuzzy, and ``tests/book/test_translation.py``
(which extracts them the same way, with ``extract``) fails until each has its Chinese again.
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
LOCALES = ROOT / "book" / "locales"
CHINESE = "zh_CN"

# The few glued values that hold English words, and how the Chinese prose says them
# (book/_ext/editions.py, PasteTextInATranslation); tests/book/test_translation.py fails on a
# glued word the Chinese prose uses without a rule here.
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
COUNT = [[rf"^{word}$", str(number)] for number, word in enumerate(NUMBER_WORDS)]
CPU = [[r"(\d+) cores?", r"\1 核"], [r"(\d+) threads?", r"\1 线程"], [r"no native bf16", "无原生 bf16"],
       [r"native bf16", "原生 bf16"], [r", ", "，"], [r"\(", "（"], [r"\)", "）"]]
GLUED_IN_CHINESE = {
    "errata_count": COUNT, "bug_count": COUNT, "weak_count": COUNT, "puzzle_count": COUNT,
    "weak_numbers": [[r"^(\d+) to (\d+)$", r"\1 至 \2"]],
    "best_in": [[r"^(\d+) of (\d+)$", r"\2 个中的第 \1 个"]],
    "top_mistakes": [[r"^a tie: ", "并列："], [r"a (\d) read as a (\d)", r"把 \1 认成 \2"], [r", ", "、"],
                     [r" and ", "、"]],
    "acc_better": [[r"^normalised$", "标准化"], [r"^raw$", "原始"]],
    "live_bf16_verdict": [[r"^faster$", "更快"], [r"^slower$", "更慢"]],
    "live_cpu": CPU, "step_cpu": CPU, "seeds_cpu": CPU, "speed_cpu": CPU, "sweep_cpu": CPU,
}

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
            "book_glued_text": GLUED_IN_CHINESE,
            "numfig_format": {"figure": "图 %s", "table": "表 %s", "code-block": "代码 %s"},
            # Sphinx splits Chinese text into words with jieba; these are the book's terms, so that
            # a search for 暂退法 finds the pages on dropout (the glossary's words, one per line).
            "html_search_options": {"dict": str(LOCALES / CHINESE / "search-words.txt")},
            "html_theme_options": {"search_bar_text": "搜索本书……"},
            "togglebutton_hint": "点击显示",
            "togglebutton_hint_hide": "点击隐藏",
            "nb_code_prompt_show": "显示代码单元格",
            "nb_code_prompt_hide": "隐藏代码单元格",
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


def edition_config(edition: str, work: Path) -> Path:
    """``_config.yml`` with the edition's settings, written where Jupyter Book can read it."""
    config = merged(yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8")), SETTINGS[edition])
    # Jupyter Book resolves local extensions against the config file's folder.
    extensions = config["sphinx"]["local_extensions"]
    config["sphinx"]["local_extensions"] = {name: str(ROOT / path) for name, path in extensions.items()}
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"_config.{edition}.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def jupyter_book(*args: str) -> None:
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT), *args]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        sys.exit(f"error: the book did not build ({' '.join(args)}); see the messages above")


def build(edition: str, work: Path) -> Path:
    """One edition, built in ``work/EDITION``; returns its HTML folder."""
    out = work / edition
    jupyter_book("--config", str(edition_config(edition, work)), "--path-output", str(out), "-W", "-n", "--keep-going")
    return out / "_build" / "html"


def site(out: Path) -> None:
    """Both editions into ``out``: the English pages at its root, the Chinese ones in ``out/zh``."""
    work = out.parent / "editions"
    english, chinese = build("en", work), build("zh", work)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(english, out)
    shutil.copytree(chinese, out / "zh")
    print(f"the book: {out / 'index.html'} (English), {out / 'zh' / 'index.html'} (中文)")


def extract(out: Path) -> Path:
    """The English messages, one ``.pot`` per page, extracted into ``out`` (a folder of its own:
    Sphinx keeps a gettext build's doctrees apart from HTML's); returns the ``.pot`` folder."""
    shutil.rmtree(out, ignore_errors=True)
    jupyter_book("--config", str(edition_config("en", out)), "--path-output", str(out),
                 "--builder", "custom", "--custom-builder", "gettext", "-W", "--keep-going")
    return out / "_build" / "gettext"


def catalogs() -> None:
    """Extract the English messages and merge them into the Chinese catalogues."""
    pot = extract(HTML.parent / "editions" / "gettext")
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
    parser.add_argument("--out", type=Path, default=HTML, help="where the site goes (default: _build/html)")
    args = parser.parse_args(argv)
    if args.catalogs:
        catalogs()
    else:
        site(args.out.resolve())


if __name__ == "__main__":
    main()
