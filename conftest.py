"""Test-session settings for the whole repository.

``pytest`` collects tests/ and, with nbval, the book's notebooks (see pyproject.toml). The
notebooks run in quick mode: each training cell trains a short run on a subset instead of
the full recipe, so that the whole book runs in minutes (see alexnet_tutorial/book.py).
Set ALEXNET_TUTORIAL_QUICK=0 to run them in full.
"""

import os

os.environ.setdefault("ALEXNET_TUTORIAL_QUICK", "1")  # inherited by the notebooks' kernels
