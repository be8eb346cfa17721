"""Test-session settings for the whole repository.

``pytest`` collects tests/ and, with nbval, the book's notebooks (see pyproject.toml). The
notebooks run in quick mode: each training cell trains a short run on a subset instead of
the full recipe, so that the whole book runs in minutes (see alexnet_tutorial/book.py).
Set ALEXNET_TUTORIAL_QUICK=0 to run them in full.

The checkpoint chapter 4 writes and chapters 3, 5 and 6 read goes to a temporary folder of
the session's own ($ALEXNET_TUTORIAL_CHECKPOINTS, see ``alexnet_tutorial.book.checkpoint_path``),
so that a test run never writes into book/ nor replaces the checkpoint of a full run.
"""

import os
import shutil
import tempfile

os.environ.setdefault("ALEXNET_TUTORIAL_QUICK", "1")  # inherited by the notebooks' kernels


def pytest_configure(config):
    if not os.environ.get("ALEXNET_TUTORIAL_CHECKPOINTS"):
        folder = tempfile.mkdtemp(prefix="alexnet-tutorial-checkpoints-")
        os.environ["ALEXNET_TUTORIAL_CHECKPOINTS"] = folder  # inherited by the notebooks' kernels
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


# Chapter 4 writes the checkpoint that chapters 3, 5, 6 and 7 read; a chapter that finds none
# trains a short run of its own first (alexnet_tutorial.book.trained_checkpoint), the same run
# chapter 4 then trains again. So chapter 4's notebook runs first of the notebooks, as in
# book/execute.py: each of them still runs whole, in its own kernel, and alone as before
# (`pytest book/03_model.ipynb`).
def pytest_collection_modifyitems(session, config, items):
    from alexnet_tutorial.book import CHECKPOINT_CHAPTER

    writer = [item for item in items if item.path.name == CHECKPOINT_CHAPTER]
    rest = [item for item in items if item.path.name != CHECKPOINT_CHAPTER]
    first = next((k for k, item in enumerate(rest) if item.path.suffix == ".ipynb"), len(rest))
    items[:] = rest[:first] + writer + rest[first:]
