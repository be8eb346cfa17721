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
