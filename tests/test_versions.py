"""The dependency floors: each one stated, the lowest-versions job pins exactly them, and the
test suite's own imports are all listed."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the package itself runs on 3.9

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "lowest_constraints.py"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(lines) -> dict[str, Requirement]:
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines}


def lowest(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_lowest_versions_job_pins_every_runtime_dependency_at_its_floor():
    result = lowest("--keep", "torch", "torchvision")
    assert result.returncode == 0, result.stderr
    pins = dict(line.split("==") for line in result.stdout.splitlines())
    expected = {name: next(s.version for s in req.specifier if s.operator == ">=")
                for name, req in requirements(PROJECT["dependencies"]).items() if name not in ("torch", "torchvision")}
    assert {canonicalize_name(name): version for name, version in pins.items()} == expected


def test_a_dependency_without_a_floor_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["numpy>=1.24", "pillow"]\n')
    result = lowest("--pyproject", str(tmp_path / "pyproject.toml"))
    assert result.returncode == 2 and result.stdout == ""
    assert "'pillow'" in result.stderr and "floor" in result.stderr and result.stderr.count("\n") == 1


def test_the_torch_floor_has_safe_weights_only_loading():
    # Before 2.6, torch.load(weights_only=True) can still run code (CVE-2025-32434).
    torch = requirements(PROJECT["dependencies"])["torch"]
    assert not torch.specifier.contains(Version("2.5.1"))
    assert torch.specifier.contains(Version("2.6.0"))


def test_every_package_the_tests_import_is_a_listed_dependency():
    listed = set(requirements(PROJECT["dependencies"])) | set(requirements(PROJECT["optional-dependencies"]["dev"]))
    stdlib = set(sys.stdlib_module_names)
    owners = packages_distributions()
    missing = {}
    for path in sorted((ROOT / "tests").rglob("*.py")) + [ROOT / "conftest.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for top in {name.split(".")[0] for name in names} - stdlib - {"alexnet_tutorial", "conftest"}:
                dists = {canonicalize_name(d) for d in owners.get(top, [top])}
                if not dists & listed:
                    missing.setdefault(top, path.relative_to(ROOT))
    assert not missing, f"imported by the tests but not in pyproject.toml: {missing}"
