"""Re-execute the book's notebooks in place, saving their outputs and widget state.

    python book/execute.py                  # every notebook in _toc.yml, full recipe (for the committed book)
    python book/execute.py --quick          # as CI runs them: ALEXNET_TUTORIAL_QUICK=1, small subsets
    python book/execute.py 04_training 06_predictions   # only these, in the order given

Each notebook runs in a fresh kernel with book/ as its working directory. Chapter 4 runs
first, because it writes checkpoints/alexnet.pt, which chapters 3, 5 and 6 load (so they
show the network trained in this same execution, never an older or a quick-mode one); the
others follow in _toc.yml order. Widget state is stored in the notebook's metadata so that the
built book can show the widgets. Prints each notebook's wall time. MNIST is read from
$ALEXNET_TUTORIAL_DATA (or downloaded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent


def toc_files() -> list[str]:
    """Every document in ``_toc.yml``, root first, in its order, without suffixes
    (the browser test opens the same list)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            files.extend([node["file"]] if "file" in node else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [f.removesuffix(".ipynb").removesuffix(".md") for f in files]


def toc_notebooks() -> list[Path]:
    """The notebooks named in ``_toc.yml``, in its order."""
    paths = [ROOT / f"{f}.ipynb" for f in toc_files()]
    return [p for p in paths if p.exists()]


def execute(path: Path, timeout: int) -> float:
    """Run one notebook top to bottom and write it back; returns the wall time in seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            record_timing=False, resources={"metadata": {"path": str(BOOK)}})
    started = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - started
    nbformat.write(nb, path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names in book/, e.g. 04_training (default: all in _toc.yml)")
    parser.add_argument("--quick", action="store_true", help="set ALEXNET_TUTORIAL_QUICK=1, as CI does")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds any one cell may run (default 3600)")
    args = parser.parse_args(argv)

    os.environ["ALEXNET_TUTORIAL_QUICK"] = "1" if args.quick else "0"  # the kernels inherit it
    if args.names:
        paths = [BOOK / f"{name.removesuffix('.ipynb')}.ipynb" for name in args.names]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            parser.error(f"no such notebook: {', '.join(missing)}")
    else:
        paths = toc_notebooks()
    from alexnet_tutorial.book import CHECKPOINT_CHAPTER  # runs first: the other chapters load its checkpoint

    paths.sort(key=lambda p: p.name != CHECKPOINT_CHAPTER)  # stable: the rest keep their order
    total = 0.0
    for path in paths:
        print(f"{path.name}: running ...", flush=True)
        seconds = execute(path, args.timeout)
        total += seconds
        print(f"{path.name}: {seconds:.1f} s", flush=True)
    print(f"{len(paths)} notebooks ({'quick' if args.quick else 'full'} mode): {total:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
