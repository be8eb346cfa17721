"""What the book's notebooks share beyond plots: the quick (CI) switch and a trained model.

Each notebook runs on its own (Colab opens one at a time), so the chapters that use a trained
network need one even when chapter 4 has not been run: :func:`trained_model` loads the
checkpoint chapter 4 writes (at :func:`checkpoint_path`), or trains a short run when there is none.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import nn

from .checkpoint import load_model
from .config import TrainConfig
from .run import train

QUICK_ENV = "ALEXNET_TUTORIAL_QUICK"
CHECKPOINTS_ENV = "ALEXNET_TUTORIAL_CHECKPOINTS"  # a folder for chapter 4's checkpoints (the tests set it)
CHECKPOINT = Path("checkpoints/alexnet.pt")  # a full run's, relative to book/, where the notebooks run
QUICK_CHECKPOINT = Path("checkpoints/quick/alexnet.pt")  # a quick run's, beside it
CHECKPOINT_CHAPTER = "04_training.ipynb"  # the notebook that writes them: run it before the others


def quick_mode() -> bool:
    """True when ``$ALEXNET_TUTORIAL_QUICK`` is set to anything but ``0``: the test suite (CI)
    sets it so that every training cell runs on a small subset and the whole book runs in minutes."""
    return os.environ.get(QUICK_ENV, "0") not in ("", "0")


def quick_config(**overrides) -> TrainConfig:
    """The short run that quick mode trains instead of the full one: 2 epochs on 5,000
    training images (500 of each digit), with the package's automatic recipe for that
    length (see :func:`alexnet_tutorial.training.resolve_recipe`). ``overrides`` change
    any setting."""
    settings = dict(subset=5000, stratified=True, epochs=2)
    return TrainConfig(**{**settings, **overrides})


def fallback_config(quick: bool | None = None) -> TrainConfig:
    """What :func:`trained_checkpoint` trains when there is no checkpoint: one epoch on the
    full training set, or in quick mode (``quick``, default :func:`quick_mode`) the quick run."""
    quick = quick_mode() if quick is None else quick
    return quick_config() if quick else TrainConfig(epochs=1)


def checkpoint_path(quick: bool | None = None) -> Path:
    """Where chapter 4 writes its checkpoint and chapters 3, 5 and 6 read it.

    ``$ALEXNET_TUTORIAL_CHECKPOINTS/alexnet.pt`` when that variable is set (the test suite
    points it at a temporary folder, so that tests never write into the book); otherwise
    :data:`CHECKPOINT` for a full run and :data:`QUICK_CHECKPOINT` in quick mode (``quick``,
    default :func:`quick_mode`), so that a quick run never replaces a full run's checkpoint.
    """
    folder = os.environ.get(CHECKPOINTS_ENV, "")
    if folder:
        return Path(folder) / CHECKPOINT.name
    quick = quick_mode() if quick is None else quick
    return QUICK_CHECKPOINT if quick else CHECKPOINT


def trained_checkpoint(path=None, quick: bool | None = None, log=print) -> Path:
    """The checkpoint of a trained network (chapters 3, 5 and 6).

    ``path`` (default :func:`checkpoint_path`, where chapter 4 writes) when it exists;
    otherwise trains :func:`fallback_config` (``quick`` chooses which) into a new temporary
    folder and returns that checkpoint.
    """
    path = checkpoint_path(quick) if path is None else Path(path)
    if path.exists():
        log(f"using the trained network in {path}")
        return path
    cfg = fallback_config(quick)
    log(f"{path} not found (chapter 4 writes it); training a short run instead: "
        f"{cfg.epochs} epoch(s) on {cfg.subset or 60_000:,} training images")
    out = Path(tempfile.mkdtemp(prefix="alexnet-tutorial-")) / "alexnet.pt"
    train(cfg, out=out, progress=False, log=log)
    return out


def trained_model(path=None, quick: bool | None = None, log=print) -> nn.Module:
    """The network in :func:`trained_checkpoint`, on the CPU, in eval mode."""
    return load_model(trained_checkpoint(path, quick, log))


def show_source(obj, fields_only: bool = False):
    """The source of a function or class of the package, read from the package itself
    (so that the page cannot drift from the code), as syntax-highlighted Python.

    ``fields_only`` (a class): the class up to its first method, that is its docstring and
    fields, found by parsing the source (no slicing on code text, so renaming a line cannot
    break a page). Returns an ``IPython.display.Code``; the last line of a cell displays it.
    """
    import ast
    import inspect
    import textwrap

    from IPython.display import Code

    source = inspect.getsource(obj)
    if fields_only:
        body = ast.parse(textwrap.dedent(source)).body[0].body
        first_method = next((node for node in body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        if first_method is not None:
            start = min([first_method.lineno] + [d.lineno for d in first_method.decorator_list])
            source = "".join(source.splitlines(keepends=True)[:start - 1]).rstrip() + "\n"
    return Code(source, language="python")


def table(header, rows):
    """A table for a notebook's output: ``header`` is the column names, ``rows`` an iterable of
    rows (each an iterable of cells, formatted with ``str``). Returns Markdown, which JupyterLab
    and Colab show as a table and the built book renders as an HTML ``<table>`` (``_config.yml``
    reads cell outputs as MyST). A ``|`` inside a cell is escaped so that it cannot split one.
    """
    from IPython.display import Markdown

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    header = list(header)
    rows = [list(row) for row in rows]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row has {len(row)} cells, the header {len(header)}: {row}")
    return Markdown("\n".join([line(header), line(["---"] * len(header))] + [line(r) for r in rows]))


def claim(holds: bool, sentence: str) -> None:
    """Fail, naming ``sentence``, unless ``holds``: the prose beside a cell says ``sentence``
    (\"the most\", \"faster than\", \"no better than\"), and the outputs must keep supporting it.
    A re-execution whose numbers no longer do stops there instead of publishing the sentence."""
    if not holds:
        raise AssertionError(f"the outputs no longer support the prose: {sentence!r}; "
                             f"change the sentence or find out what changed")


GLUE_MIME_PREFIX = "application/papermill.record/"  # where myst-nb's glue keeps a value


def glue(name: str, value, fmt: str | None = None) -> None:
    """Record ``value`` under ``name`` for the page's prose, which quotes it with
    ``{glue:text}`name``` (myst-nb's glue): the rendered text then always comes from this
    cell's output, so a re-run cannot leave the prose behind.

    ``fmt`` formats the value (``"{:.2%}"``, ``"{:,}"``) and the formatted text is what the
    prose shows. Nothing is displayed in the notebook, even on a cell's last line. Uses
    ``myst_nb.glue`` where myst-nb is installed (building the book); elsewhere (Colab) records
    the same output itself.
    """
    text = fmt.format(value) if fmt else str(value)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        from IPython.display import display

        display({GLUE_MIME_PREFIX + "text/plain": repr(text)}, raw=True,
                metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_MIME_PREFIX}})
    else:
        myst_glue(name, text, display=False)


# The committed benchmark results, read by the chapters that quote them.
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"  # in a checkout of the repository
# On the repository's home (pyproject.toml's [project.urls]; tools/set_home.py rewrites it).
RESULTS_URL = "https://raw.githubusercontent.com/alexnet-tutorial/alexnet-tutorial/main/benchmarks/results/"


def benchmark_result(name: str) -> Path:
    """The file ``benchmarks/results/<name>`` of the repository: from the checkout the package
    was installed from, or, where the package was installed without one (Colab), downloaded
    once into ``benchmark-results/`` beside the notebook."""
    local = RESULTS / name
    if local.is_file():
        return local
    copy = Path("benchmark-results") / name
    if not copy.is_file():
        import urllib.request

        try:
            with urllib.request.urlopen(RESULTS_URL + name, timeout=30) as response:
                data = response.read()
        except OSError as error:
            raise FileNotFoundError(f"benchmarks/results/{name} is not in this installation and could not be "
                                    f"downloaded from {RESULTS_URL + name} ({error}); open the notebook in a "
                                    f"checkout of the repository") from None
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(data)
    return copy
