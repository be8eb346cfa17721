"""The built book as readers see it, in headless Chromium.

Every page listed in ``_toc.yml`` is opened at laptop width (1366x768) in light mode and at
phone width (390x844) in light and in dark mode, and its Chinese twin (``zh/``) at laptop width
in light mode and at phone width in dark mode. Each time: no console error, every image loaded, the saved
widgets rendered with their pictures, no sideways scrolling on the page, and no request to
any host but this machine (others are recorded and blocked, so the test never goes online).
Notebook pages must carry the Colab link to their own notebook. On the pages with the
feature-map viewer and the prediction explorer, moving each control must change the picture
and its caption, with no kernel: the saved pictures follow the controls in the browser.

A full-page screenshot of every view goes to a temporary folder, or to
``$ALEXNET_TUTORIAL_SCREENSHOTS`` when set, for a person to look at; the test run ends by
printing where. The book is built into a temporary folder too, both editions, with README's
command (``book/build.py``). Each page's link to the other edition must lead to the same page in
the other language; the Chinese pages must be in Chinese, theme included, and their search must
find the pages on dropout by its Chinese name. Needs Debian's Chromium (``apt-get install
chromium``) and, for the screenshots of the Chinese pages, a CJK font (``apt-get install
fonts-noto-cjk``). Set ``ALEXNET_TUTORIAL_BOOK_HTML`` to an already built ``_build/html`` to
skip the build.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS_ENV = "ALEXNET_TUTORIAL_SCREENSHOTS"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VIEWS = {  # name: (viewport, browser context options)
    "laptop-light": ({"width": 1366, "height": 768}, {"color_scheme": "light"}),
    "phone-light": ({"width": 390, "height": 844}, {"color_scheme": "light", "is_mobile": True, "has_touch": True}),
    "phone-dark": ({"width": 390, "height": 844}, {"color_scheme": "dark", "is_mobile": True, "has_touch": True}),
}

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e '.[dev]')")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"needs Chromium at {CHROMIUM}: apt-get install chromium")


def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def toc_files() -> list[str]:
    """Every document in ``_toc.yml``, root first, without its suffix: the list
    ``book/execute.py`` runs, read by the same function."""
    if not (ROOT / "_toc.yml").exists():
        return []
    spec = importlib.util.spec_from_file_location("book_execute", ROOT / "book" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.toc_files()


def colab_url(file: str) -> str:
    """The launch link sphinx-book-theme should put on a notebook page, from ``_config.yml``."""
    repo = book_config()["repository"]
    owner_repo = urlsplit(repo["url"]).path.strip("/").removesuffix(".git")
    prefix = (repo.get("path_to_book") or "").strip("/")
    path = f"{prefix}/{file}.ipynb" if prefix else f"{file}.ipynb"
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{repo.get('branch', 'main')}/{path}"


@pytest.fixture(scope="session")
def book_html(tmp_path_factory) -> Path:
    """The book's HTML: ``$ALEXNET_TUTORIAL_BOOK_HTML`` if set, else built here (with -W -n)."""
    given = os.environ.get("ALEXNET_TUTORIAL_BOOK_HTML")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("book") / "html"
    result = subprocess.run([sys.executable, str(ROOT / "book" / "build.py"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"book build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return out


@pytest.fixture(scope="session")
def screenshots(request, tmp_path_factory) -> Path:
    """Where the screenshots go: ``$ALEXNET_TUTORIAL_SCREENSHOTS`` if set, else a temporary folder;
    named at the end of the test run."""
    given = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter else print
    request.config.add_cleanup(lambda: say(f"screenshots of the book's pages: {folder}"))  # after the summary
    return folder


@pytest.fixture(scope="session")
def server(book_html):
    """The built book served on 127.0.0.1 on a free port; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(book_html)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


def open_page(browser, url: str, view: str):
    """Load ``url`` in a fresh context; returns (page, context, problems, outside requests)."""
    viewport, options = VIEWS[view]
    context = browser.new_context(viewport=viewport, **options)
    problems, outside = [], []

    def route(route):
        if is_local(route.request.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda r: None if is_local(r.url) else outside.append(r.url))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(url, wait_until="networkidle")
    return page, context, problems, outside


WIDGET_VIEWS = 'script[type="application/vnd.jupyter.widget-view+json"]'

RENDERED = """views => Array.from(document.querySelectorAll(views)).every(
  s => s.parentElement.querySelector(".widget-subarea .jupyter-widgets"))"""
PICTURES_LOADED = """() => Array.from(document.querySelectorAll("img.widget-image")).every(
  i => i.complete && i.naturalWidth > 0)"""
# The widget manager draws the pictures a moment after the widgets: wait for one, shown and loaded.
A_PICTURE_SHOWN = """() => Array.from(document.querySelectorAll("img.widget-image")).some(
  i => i.offsetParent !== null && i.complete && i.naturalWidth > 0)"""
CHECK_PAGE = """([views, width]) => {
  const images = Array.from(document.images);
  views = Array.from(document.querySelectorAll(views));
  return {
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120)),
    views: views.length,
    unrendered: views.filter(s => !s.parentElement.querySelector(".widget-subarea .jupyter-widgets")).length,
    widgetImages: document.querySelectorAll("img.widget-image").length,
    overflow: document.documentElement.scrollWidth - width,  // a phone widens its layout to fit
    theme: document.documentElement.dataset.theme,
    // What a reader of the text sees: no table left as a paragraph of pipes, every computed
    // figure numbered and captioned, source listings keeping their indentation, no machinery.
    pipeText: Array.from(document.querySelectorAll("article p")).filter(
      p => p.textContent.trim().startsWith("|")).length,
    outputTables: document.querySelectorAll(".cell_output table").length,
    uncaptioned: Array.from(document.querySelectorAll(".cell_output img:not(.widget-image)")).filter(
      i => !(i.closest("figure") && i.closest("figure").querySelector("figcaption"))).length,
    wrappedSource: Array.from(document.querySelectorAll(".cell_input pre, .output.text_html .highlight pre")).filter(
      p => getComputedStyle(p).whiteSpace !== "pre").length,
    machinery: (document.querySelector("article") || document.body).innerText.match(
      /ALEXNET_TUTORIAL_QUICK|[/]tmp[/]\\S*/g) || [],
    // Which edition, and the way to the other one.
    lang: document.documentElement.lang,
    switchTo: (document.querySelector("a.edition-switch") || {}).href || null,
    heading: (document.querySelector("article h1") || {}).textContent || "",
    searchBox: (document.querySelector("input[name=q]") || {}).placeholder || "",
  };
}"""
# The editions: the folder each lives in, its html lang, the views it is opened in.
EDITIONS = {
    "en": ("", "en", ["laptop-light", "phone-light", "phone-dark"]),
    "zh": ("zh/", "zh-CN", ["laptop-light", "phone-dark"]),
}
CHINESE = re.compile(r"[\u4e00-\u9fff]")


PAGES = toc_files()
# The chapters whose cells compute tables (alexnet_tutorial.book.table).
PAGES_WITH_TABLES = {"book/03_model", "book/04_training", "book/06_predictions", "book/07_errata", "book/08_speed"}


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("file", PAGES or [pytest.param("", marks=pytest.mark.skip(reason="no _toc.yml yet"))])
def test_page_reads_well_offline(browser, server, book_html, screenshots, file, edition):
    folder, lang, views = EDITIONS[edition]
    html = f"{folder}{file}.html"
    assert (book_html / html).exists(), f"{html} was not built"
    notebook = (ROOT / f"{file}.ipynb").exists()
    other = next(f for e, (f, _, _) in EDITIONS.items() if e != edition)
    failures = []
    for view in views:
        page, context, problems, outside = open_page(browser, f"{server}/{html}", view)
        try:
            if page.locator(WIDGET_VIEWS).count():  # the widget manager renders after the load
                page.wait_for_function(RENDERED, arg=WIDGET_VIEWS, timeout=20_000)
                page.wait_for_function(PICTURES_LOADED, timeout=10_000)
            state = page.evaluate(CHECK_PAGE, [WIDGET_VIEWS, VIEWS[view][0]["width"]])
            page.screenshot(path=str(screenshots / f"{folder}{file}-{view}.png".replace("/", "_")), full_page=True)
            if notebook and view == "laptop-light":
                links = page.eval_on_selector_all('a[href^="https://colab.research.google.com/"]',
                                                  "as => as.map(a => a.href)")
                if colab_url(file) not in links:
                    failures.append(f"no Colab link {colab_url(file)} (found {links})")
        finally:
            context.close()
        failures += [f"{view}: {p}" for p in problems]
        failures += [f"{view}: request to another host: {u}" for u in outside]
        failures += [f"{view}: image did not load: {src}" for src in state["broken"]]
        if state["unrendered"]:
            failures.append(f"{view}: {state['unrendered']} of {state['views']} saved widgets did not render")
        if state["overflow"] > 0:
            failures.append(f"{view}: the page scrolls sideways by {state['overflow']} px")
        if state["pipeText"]:
            failures.append(f"{view}: {state['pipeText']} paragraphs start with '|' (a table shown as text)")
        if file in PAGES_WITH_TABLES and not state["outputTables"]:
            failures.append(f"{view}: the tables its cells compute are not rendered as tables")
        if state["uncaptioned"]:
            failures.append(f"{view}: {state['uncaptioned']} figures have no number and caption")
        if state["wrappedSource"]:
            failures.append(f"{view}: {state['wrappedSource']} code listings wrap and lose their indentation")
        if state["machinery"]:
            failures.append(f"{view}: the page shows the book's machinery: {state['machinery'][:3]}")
        expected_theme = "dark" if view.endswith("dark") else "light"
        if state["theme"] != expected_theme:
            failures.append(f"{view}: page theme is {state['theme']!r}, expected {expected_theme!r}")
        if state["lang"] != lang:
            failures.append(f"{view}: the page's language is {state['lang']!r}, expected {lang!r}")
        if state["switchTo"] != f"{server}/{other}{file}.html":
            failures.append(f"{view}: the link to the other edition is {state['switchTo']!r}, "
                            f"expected {server}/{other}{file}.html")
        if edition == "zh" and not (CHINESE.search(state["heading"]) and CHINESE.search(state["searchBox"])):
            failures.append(f"{view}: heading {state['heading']!r} or search box {state['searchBox']!r} not in Chinese")
    assert not failures, f"{html}:\n" + "\n".join(failures)


def test_widget_pages_use_the_vendored_scripts(book_html):
    """Pages with widgets load require.js and the widget manager from the book itself."""
    pages = [p for p in book_html.rglob("*.html") if "application/vnd.jupyter.widget-state+json" in p.read_text()]
    if not pages:
        pytest.skip("no page with saved widget state (notebooks not executed yet?)")
    for page in pages:
        text = page.read_text()
        for script in ("_static/widgets/require.js", "_static/widgets/config.js",
                       "_static/widgets/html-manager/embed-amd.js"):
            assert script in text, f"{page.name} does not load {script}"
        for cdn in ("cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com/@jupyter-widgets"):
            assert cdn not in text, f"{page.name} refers to {cdn}"


SHOWN = """async () => {
  const visible = e => e.offsetParent !== null;
  const img = Array.from(document.querySelectorAll("img.widget-image")).filter(visible);
  const bytes = await Promise.all(img.map(async i => new Uint8Array(await (await fetch(i.src)).arrayBuffer())));
  const digests = await Promise.all(bytes.map(async b => Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", b))).map(x => x.toString(16).padStart(2, "0")).join("")));
  const html = Array.from(document.querySelectorAll(".widget-html-content")).filter(visible);
  return {pictures: digests, sizes: bytes.map(b => b.length), captions: html.map(h => h.textContent)};
}"""
SAVED_WIDGETS = {  # page: its controls, each as (what, how to move it)
    "book/03_model": [("slider", "image"), ("dropdown", 2)],
    "book/06_predictions": [("dropdown", 1), ("slider", "image")],
}


def move(page, kind: str, how) -> None:
    """Move one control of a saved widget, as a reader does: a slider one step to the right
    with the keyboard, a dropdown to its option number ``how``."""
    if kind == "dropdown":
        page.locator(".widget-dropdown select").select_option(index=how)
    else:
        handle = page.locator(".widget-slider .noUi-handle").filter(visible=True)
        handle.focus()
        handle.press("ArrowRight")


def shown_after(page, before: dict, seconds: float = 5) -> dict:
    """What the page shows once its picture differs from ``before`` (or after ``seconds``):
    the widget manager redraws a Stack's child a moment after the control moves."""
    deadline = time.monotonic() + seconds
    while True:
        page.wait_for_function(PICTURES_LOADED, timeout=5_000)
        now = page.evaluate(SHOWN)
        if now["pictures"] != before["pictures"] or time.monotonic() > deadline:
            return now
        page.wait_for_timeout(100)


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("file", sorted(SAVED_WIDGETS))
def test_saved_widgets_follow_their_controls_offline(browser, server, book_html, screenshots, file, edition):
    folder = EDITIONS[edition][0]
    page, context, problems, outside = open_page(browser, f"{server}/{folder}{file}.html", "laptop-light")
    try:
        page.wait_for_function(RENDERED, arg=WIDGET_VIEWS, timeout=20_000)
        page.wait_for_function(A_PICTURE_SHOWN, timeout=20_000)
        page.wait_for_function(PICTURES_LOADED, timeout=10_000)
        before = page.evaluate(SHOWN)
        assert len(before["pictures"]) == 1 and before["sizes"][0] > 1000, before
        for kind, how in SAVED_WIDGETS[file]:
            move(page, kind, how)
            after = shown_after(page, before)
            assert len(after["pictures"]) == 1, after
            assert after["pictures"] != before["pictures"], f"moving the {kind} left the picture as it was"
            assert after["captions"] != before["captions"], f"moving the {kind} left the caption as it was"
            before = after
        page.screenshot(path=str(screenshots / f"{folder}{file}-moved.png".replace("/", "_")), full_page=True)
    finally:
        context.close()
    assert not problems, problems
    assert not outside, f"requests to other hosts: {outside}"


def test_the_pages_with_tables_are_in_the_book():
    assert PAGES_WITH_TABLES <= set(PAGES), "a page expected to show tables is not in _toc.yml"


@pytest.mark.parametrize("file", ["book/01_introduction", "book/03_model"])
def test_the_language_link_leads_to_the_same_page_and_back(browser, server, book_html, file):
    page, context, problems, outside = open_page(browser, f"{server}/{file}.html", "phone-light")
    try:
        for there in (f"{server}/zh/{file}.html", f"{server}/{file}.html"):
            page.locator("a.edition-switch").click()
            page.wait_for_url(there)
            assert page.evaluate("document.documentElement.lang") == ("zh-CN" if "/zh/" in there else "en")
    finally:
        context.close()
    assert not problems and not outside, (problems, outside)


def test_the_chinese_search_finds_the_pages_on_dropout_by_its_chinese_name(browser, server, book_html):
    page, context, problems, outside = open_page(browser, f"{server}/zh/search.html?q=暂退法", "laptop-light")
    try:
        page.wait_for_selector("#search-results ul.search li", timeout=20_000)
        page.wait_for_function("() => !document.querySelector('#search-progress') "
                               "|| !document.querySelector('#search-progress').textContent.includes('...')")
        found = page.eval_on_selector_all("#search-results ul.search li a", "as => as.map(a => a.href)")
    finally:
        context.close()
    for chapter in ("book/03_model", "book/04_training", "book/11_glossary"):
        assert any(f"/zh/{chapter}.html" in url for url in found), f"{chapter} not among {found}"
    assert not problems and not outside, (problems, outside)
