"""Colab as it is: the set-up cell in an imitation of a Colab runtime, then one chapter.

The imitation is a fresh virtual environment with the packages Colab preinstalls at the
versions Colab lists (``colab-requirements.txt``, ipywidgets 7.7.1 among them). Colab's
torch and torchvision stand in as this test run's own (a second multi-gigabyte install would
cost more than the whole test): a ``.pth`` file makes them, and nbval, the test's own tool,
importable behind the environment's own packages. The set-up cell that opens every chapter
then runs there with its install URL pointed at a clone of this checkout (``git+file://``),
as Colab runs it against GitHub; the test prints what it installed or upgraded, checks that
it installed the package from the clone, kept Colab's ipywidgets 7 and torch, and changed
nothing else that the package's dependency floors (pyproject.toml) do not ask for. Last,
chapter 2 runs under nbval in that environment, in quick mode.

It needs the package registry (pip installs Colab's packages from it) and takes a few minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = Path(__file__).with_name("colab-requirements.txt")
SETUP_CELL = ROOT / "book" / "_colab_cell.py"
CHAPTER = ROOT / "book" / "02_data.ipynb"
PREINSTALLED = ("torch", "torchvision")  # Colab has them; the fresh environment borrows this run's
TOOLS = ("nbval",)                        # the test's own, borrowed the same way
PIP_QUIET = ["--quiet", "--disable-pip-version-check", "--retries", "1", "--timeout", "30"]

# Prints every installed distribution as {name: [version, folder]}, the first of each name on sys.path.
SNAPSHOT = r"""
import json, re
from importlib import metadata
found = {}
for dist in metadata.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    found.setdefault(name, [dist.version, str(dist.locate_file(""))])
print(json.dumps(found))
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def run_in(python: Path, *args, cwd: Path, timeout: float = 900, **extra_env) -> subprocess.CompletedProcess:
    """Runs the imitation's ``python`` in ``cwd`` (not in this checkout, which it would import from)."""
    return run(python, *args, cwd=cwd, timeout=timeout, env=clean_env(**extra_env))


def floors() -> dict[str, Requirement]:
    """The package's dependencies as pyproject.toml states them, by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def requirements(dist: metadata.Distribution, extras=frozenset()) -> list[Requirement]:
    """What ``dist`` requires on this machine, with ``extras`` asked for."""
    found = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
            found.append(req)
    return found


def closure(names, have) -> list[metadata.Distribution]:
    """``names`` and everything they require (extras included) but what is in ``have``, as installed
    for this test run."""
    todo, found, done = [(name, frozenset()) for name in names], {}, set()
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in done or canonicalize_name(name) in have:
            continue
        done.add((canonicalize_name(name), extras))
        try:
            dist = found[canonicalize_name(name)] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        todo += [(req.name, frozenset(req.extras)) for req in requirements(dist, extras)]
    return list(found.values())


def unmet(reqs, versions: dict[str, tuple[str, str]]) -> set[str]:
    """The names among ``reqs`` whose version in ``versions`` does not satisfy them."""
    return {canonicalize_name(r.name) for r in reqs if canonicalize_name(r.name) in versions
            and not r.specifier.contains(versions[canonicalize_name(r.name)][0], prereleases=True)}


def borrow(dists, into: Path) -> None:
    """Links the top-level files and folders of ``dists`` into ``into``."""
    into.mkdir()
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for dist in dists:
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (into / top).exists() and source.resolve().is_relative_to(site):
                (into / top).symlink_to(source)


def snapshot(python: Path, cwd: Path) -> dict[str, tuple[str, str]]:
    out = run_in(python, "-c", SNAPSHOT, cwd=cwd).stdout
    return {name: tuple(found) for name, found in json.loads(out).items()}


def clean_env(**extra) -> dict[str, str]:
    """This process's environment without what points Python at this checkout or at this run's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def copy_checkout(into: Path) -> Path:
    """A git repository holding this checkout's files as they are now, committed or not."""
    listed = run("git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: the set-up cell installs from a git URL")
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    git = ["git", "-C", into, "-c", "user.name=test", "-c", "user.email=test@localhost"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the checkout under test"]):
        run(*git, *command, check=True)
    return into


@pytest.fixture(scope="module")
def colab(tmp_path_factory, data_dir):
    """The imitation of a Colab runtime, before and after its set-up cell ran."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the set-up cell installs from a git URL")
    tmp = tmp_path_factory.mktemp("colab")
    probe = run(sys.executable, "-m", "pip", "download", *PIP_QUIET, "--no-deps", "--dest", tmp / "probe",
                "ipywidgets==7.7.1")
    if probe.returncode != 0:
        pytest.skip("the package registry is not reachable (pip download ipywidgets==7.7.1 failed): "
                    f"this test installs Colab's packages from it. {probe.stderr.strip()[-300:]}")

    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv, check=True)
    python = venv / "bin" / "python"
    installed = run_in(python, "-m", "pip", "install", *PIP_QUIET, "--no-compile", "-r", REQUIREMENTS, cwd=tmp)
    assert installed.returncode == 0, f"Colab's packages did not install:\n{installed.stderr[-3000:]}"

    site = Path(run_in(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp).stdout.strip())
    own = snapshot(python, tmp)
    borrowed = closure(PREINSTALLED + TOOLS, have=own)
    borrow(borrowed, tmp / "preinstalled")
    (site / "colab-preinstalled.pth").write_text(f"{tmp / 'preinstalled'}\n")
    hidden = run_in(python, "-c", "import alexnet_tutorial", cwd=tmp)
    assert hidden.returncode != 0, "the imitation already imports alexnet_tutorial: the set-up cell would not install"

    clone = copy_checkout(tmp / "clone")
    before = snapshot(python, tmp)
    setup = run_in(python, SETUP_CELL, cwd=tmp, ALEXNET_TUTORIAL_INSTALL_URL=f"git+file://{clone}")
    after = snapshot(python, tmp)
    # This run's torch may ask more of Colab's packages than Colab's own torch does (torch 2.14
    # wants setuptools>=77, Colab has 75.2): what it asks for is the imitation's, not the set-up's.
    borrowed_needs = unmet([r for d in borrowed for r in requirements(d)], before)
    return {"python": python, "site": site, "clone": clone, "before": before, "after": after, "setup": setup,
            "tmp": tmp, "data_dir": data_dir, "borrowed_needs": borrowed_needs}


def changes(before, after) -> dict[str, tuple[str | None, str]]:
    """``{name: (old version or None, new version)}`` for what the set-up cell installed or replaced."""
    return {name: (before.get(name, (None,))[0], found[0]) for name, found in after.items()
            if before.get(name) != found}


def test_setup_cell_installs_the_package_from_the_clone(colab, capsys):
    setup, changed = colab["setup"], changes(colab["before"], colab["after"])
    with capsys.disabled():
        print(f"\nthe set-up cell in a Colab-like environment (exit status {setup.returncode}) installed or upgraded:")
        for name, (old, new) in sorted(changed.items()):
            print(f"  {name} {new}" if old is None else f"  {name} {old} -> {new}")
        print((setup.stdout + setup.stderr).strip())
    assert setup.returncode == 0, f"the set-up cell failed:\n{setup.stderr[-3000:]}"
    assert "alexnet-tutorial" in changed, "the set-up cell did not install the package"
    version, folder = colab["after"]["alexnet-tutorial"]
    assert Path(folder).resolve() == colab["site"].resolve(), f"installed into {folder}, not the environment"
    direct_url = json.loads(next(Path(folder).glob("alexnet_tutorial-*.dist-info/direct_url.json")).read_text())
    assert direct_url["url"] == f"file://{colab['clone']}", f"installed from {direct_url['url']}, not the clone"


def test_setup_cell_keeps_colabs_ipywidgets_7(colab):
    before, after = colab["before"]["ipywidgets"][0], colab["after"]["ipywidgets"][0]
    assert Version(after).major == 7, (
        f"the set-up cell replaced Colab's ipywidgets {before} by {after}; Colab's page shows widgets of "
        f"ipywidgets 7, so the package must accept it (pyproject.toml: {floors().get('ipywidgets')})")


def test_setup_cell_keeps_colabs_torch(colab):
    for name in PREINSTALLED:
        assert colab["after"][name] == colab["before"][name], (
            f"the set-up cell reinstalled {name}: {colab['before'][name]} -> {colab['after'][name]}")


def test_setup_cell_changes_only_what_the_dependency_floors_ask_for(colab):
    before = colab["before"]
    asked = unmet(floors().values(), before) | colab["borrowed_needs"]
    replaced = {name: versions for name, versions in changes(before, colab["after"]).items() if versions[0]}
    unasked = {name: versions for name, versions in replaced.items() if name not in asked}
    assert not unasked, (f"the set-up cell replaced Colab's {unasked}, which pyproject.toml's floors "
                         f"({', '.join(map(str, floors().values()))}) do not ask for (it replaced {replaced})")


def test_a_chapter_runs_under_nbval_after_the_setup(colab):
    if colab["setup"].returncode != 0:
        pytest.skip("the set-up cell failed (see test_setup_cell_installs_the_package_from_the_clone)")
    content = colab["tmp"] / "content"  # Colab opens a notebook alone, in /content
    content.mkdir()
    shutil.copy(CHAPTER, content)
    result = run_in(colab["python"], "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
                    CHAPTER.name, cwd=content, ALEXNET_TUTORIAL_QUICK="1", ALEXNET_TUTORIAL_DATA=str(colab["data_dir"]))
    assert result.returncode == 0, f"{CHAPTER.name} under nbval in the Colab-like environment:\n{result.stdout[-5000:]}"
