"""The package as a user gets it: build, check, install alone, run.

    .venv/bin/python .ci/check_package.py      # .ci/run runs it; needs the dev extra (build, twine)

1. ``python -m build``, in a clean copy of the checkout, makes the sdist and the wheel;
   ``twine check --strict`` passes on both.
2. The wheel holds the package, its license and its metadata, nothing else (no book, tests or
   benchmark results); the sdist holds what the wheel is built from. Any other file fails.
3. A fresh venv installs the wheel alone (``--no-deps``): its dependencies come from this
   Python's site-packages through a ``.pth`` file, as in .ci/run's lowest-versions job, so that
   PyTorch is not downloaded again. From a folder outside the checkout it must import the
   package from that venv, and ``alexnet-tutorial --version``, ``--help`` and a short ``train``
   (200 images, one epoch, on $ALEXNET_TUTORIAL_DATA) must work.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "alexnet_tutorial"


def fail(message: str) -> None:
    raise SystemExit(f"check_package: {message}")


def run(*args, cwd=ROOT, env=None, quiet=False) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"{' '.join(map(str, args))} exited with {result.returncode}:\n"
             f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    if not quiet:
        print(result.stdout, end="")
    return result.stdout


def version() -> str:
    """``__version__`` as written in the package's __init__.py (read, not imported)."""
    tree = ast.parse((ROOT / PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    fail(f"{PACKAGE}/__init__.py does not set __version__")


def expected_files(version: str) -> tuple[set[str], set[str]]:
    """What the wheel and the sdist may hold."""
    modules = {f"{PACKAGE}/{p.name}" for p in (ROOT / PACKAGE).glob("*.py")}
    info = f"{PACKAGE}-{version}.dist-info"
    wheel = modules | {f"{info}/{name}" for name in
                       ("METADATA", "WHEEL", "RECORD", "entry_points.txt", "top_level.txt", "licenses/LICENSE")}
    egg = f"{PACKAGE}.egg-info"
    sdist = modules | {"PKG-INFO", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg"} | {
        f"{egg}/{name}" for name in ("PKG-INFO", "SOURCES.txt", "dependency_links.txt", "entry_points.txt",
                                     "requires.txt", "top_level.txt")}
    return wheel, {f"{PACKAGE}-{version}/{name}" for name in sdist}


def check_contents(wheel: Path, sdist: Path, version: str) -> None:
    """The wheel holds exactly the expected files; the sdist nothing beyond them, and the package and license."""
    want_wheel, want_sdist = expected_files(version)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    in_sdist = {m.name for m in tarfile.open(sdist).getmembers() if m.isfile()}
    print(f"{wheel.name}:", *sorted(in_wheel), sep="\n  ")
    print(f"{sdist.name}:", *sorted(in_sdist), sep="\n  ")
    if in_wheel != want_wheel:
        fail(f"the wheel holds {', '.join(sorted(in_wheel - want_wheel)) or 'nothing unexpected'} it should not, "
             f"and lacks {', '.join(sorted(want_wheel - in_wheel)) or 'nothing'}")
    if in_sdist - want_sdist:
        fail(f"the sdist holds files it should not: {', '.join(sorted(in_sdist - want_sdist))}")
    needed = {f"{PACKAGE}-{version}/{name}" for name in ("LICENSE", "pyproject.toml", "README.md")}
    needed |= {f"{PACKAGE}-{version}/{name}" for name in want_wheel if name.startswith(f"{PACKAGE}/")}
    if needed - in_sdist:
        fail(f"the sdist lacks {', '.join(sorted(needed - in_sdist))}")


def clean_copy(into: Path) -> Path:
    """The checkout's files (tracked, or new and not ignored) copied to ``into``: a build in the
    checkout itself would reuse whatever an earlier build left in its ignored *.egg-info."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        fail(f"{ROOT} is not a git checkout: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    return into


def fresh_venv(folder: Path) -> Path:
    """A venv that sees this Python's site-packages (for the dependencies) behind its own."""
    run(sys.executable, "-m", "venv", "--without-pip", folder, quiet=True)  # this Python's pip installs into it
    python = folder / "bin" / "python"
    own = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", quiet=True).strip()
    borrowed = [p for p in sys.path if p.endswith("site-packages")]
    (Path(own) / "_check_package_deps.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in borrowed) + "\n")
    return python


def main() -> int:
    start = time.monotonic()
    want = version()
    with tempfile.TemporaryDirectory(prefix="check-package-") as tmp:
        tmp = Path(tmp)
        source = clean_copy(tmp / "source")
        run(sys.executable, "-m", "build", "--outdir", tmp / "dist", source, quiet=True)
        wheels, sdists = sorted((tmp / "dist").glob("*.whl")), sorted((tmp / "dist").glob("*.tar.gz"))
        if [w.name for w in wheels] != [f"{PACKAGE}-{want}-py3-none-any.whl"] or len(sdists) != 1:
            fail(f"expected one sdist and {PACKAGE}-{want}-py3-none-any.whl, built {[p.name for p in wheels + sdists]}")
        run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)
        check_contents(wheels[0], sdists[0], want)

        python = fresh_venv(tmp / "venv")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--ignore-installed",
            wheels[0], env=env)
        outside = tmp / "elsewhere"
        outside.mkdir()
        where = run(python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)", cwd=outside, env=env, quiet=True)
        if not Path(where.strip()).resolve().is_relative_to((tmp / "venv").resolve()):
            fail(f"the fresh venv imports {PACKAGE} from {where.strip()}, not from the wheel it installed")
        print(f"fresh venv imports {PACKAGE} from {where.strip()}")
        command = tmp / "venv" / "bin" / "alexnet-tutorial"
        printed = run(command, "--version", cwd=outside, env=env).strip()
        if printed != f"alexnet-tutorial {want}":
            fail(f"alexnet-tutorial --version printed {printed!r}, the package's version is {want}")
        if "train" not in run(command, "--help", cwd=outside, env=env, quiet=True):
            fail("alexnet-tutorial --help does not name the train command")
        run(command, "train", "--subset", "200", "--epochs", "1", "--no-progress", "--out", tmp / "t.pt",
            cwd=outside, env=env)
    print(f"check_package: sdist and wheel of {PACKAGE} {want} sound ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
