"""Print the lowest versions the package claims to support, one ``name==floor`` a line.

    python .ci/lowest_constraints.py [--keep torch torchvision] > floors.txt
    python .ci/lowest_constraints.py --check [--keep torch torchvision]

Reads ``[project] dependencies`` from pyproject.toml and pins each one to the version its
``>=`` bound names, so that CI can install exactly those versions and run the tests there.
A dependency without a ``>=`` floor is an error: "any version" is a claim nobody has tested.
``--keep`` names dependencies to leave out (they stay at the version already installed).
``--check`` prints the version and place of every dependency this Python imports, and fails
unless each one not kept is at its floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def floors(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """``{name: floor}`` for every runtime dependency in ``pyproject``; ValueError if one has no floor."""
    project = tomllib.loads(pyproject.read_text())["project"]
    result = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(lower) != 1:
            raise ValueError(f"{pyproject.name}: dependency {line!r} needs exactly one '>=' floor")
        result[requirement.name] = lower[0]
    return result


def check(pins: dict[str, str], keep) -> list[str]:
    """Print what this Python imports for each dependency; the lines for those off their floor."""
    import importlib
    from importlib.metadata import distribution, packages_distributions

    from packaging.utils import canonicalize_name
    from packaging.version import Version

    modules = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules.setdefault(canonicalize_name(dist), []).append(module)
    wrong = []
    for name, floor in pins.items():
        dist = distribution(name)
        candidates = modules[canonicalize_name(name)]
        module = importlib.import_module(name if name in candidates else min(candidates, key=len))
        place = Path(module.__file__).parent
        print(f"{name} {dist.version}: {module.__name__} from {place}" + (" (kept)" if name in keep else ""))
        if name not in keep and Version(dist.version) != Version(floor):
            wrong.append(f"{name} {dist.version} is imported, not its floor {floor}")
    return wrong


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", nargs="*", default=[], help="dependencies to leave at their installed version")
    parser.add_argument("--check", action="store_true", help="check the imported versions instead of printing pins")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    try:
        pins = floors(args.pyproject)
    except (OSError, ValueError, KeyError) as exc:
        print(f"lowest_constraints: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.keep) - set(pins))
    if unknown:
        print(f"lowest_constraints: --keep names no dependency: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.check:
        wrong = check(pins, args.keep)
        for line in wrong:
            print(f"lowest_constraints: {line}", file=sys.stderr)
        return 1 if wrong else 0
    for name, version in pins.items():
        if name not in args.keep:
            print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
