"""What publishing relies on: one version, workflows that run README's own commands on actions
pinned to commits, and .ci/run running the release checks (CONTRIBUTING.md, "Publish"). The
checks themselves (zizmor, the schemas, the package build) run in .ci/run, not here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import alexnet_tutorial

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the package itself runs on 3.9

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """README's section whose heading starts with ``title``, up to the next one."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL)
    assert match, f"README has no section {title!r}"
    return match[1]


def commands(text: str) -> list[str]:
    """The commands in the text's ```bash blocks, without their trailing comments."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.DOTALL)
    return [re.sub(r"\s+#.*$", "", line).strip() for block in blocks for line in block.splitlines() if line.strip()]


SETUP = commands(section("Set up"))
BUILD = next(c for c in commands(section("Run")) if "book/build.py" in c)
TEST = commands(section("Test"))


def run_lines(workflow: Path) -> list[str]:
    """Every line of every ``run:`` step of the workflow."""
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [line.strip() for job in jobs.values() for step in job["steps"] for line in step.get("run", "").splitlines()]


def test_the_version_is_written_once_and_the_command_line_prints_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "alexnet_tutorial.__version__"}
    printed = subprocess.run([sys.executable, "-m", "alexnet_tutorial", "--version"], capture_output=True, text=True,
                             cwd=ROOT, timeout=120)
    assert printed.returncode == 0 and printed.stdout == f"alexnet-tutorial {alexnet_tutorial.__version__}\n"
    first = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert first and first[1].rstrip(":") == alexnet_tutorial.__version__, "CHANGELOG.md's newest section"


def test_readme_states_its_commands():
    assert len(SETUP) == 2 and SETUP[0].startswith("python3 -m venv .venv") and "chromium" in SETUP[1]
    assert TEST == [".venv/bin/python -m pytest"] and BUILD == ".venv/bin/python book/build.py"


def test_ci_runs_readmes_commands_and_the_release_checks():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in [*SETUP, *TEST]:
        assert any(re.sub(r"\s+#.*$", "", line).strip() == command for line in script), command
    for check in ("check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml",
                  "zizmor --offline --min-severity medium .github/workflows",
                  "check-jsonschema --builtin-schema vendor.citation-file-format CITATION.cff",
                  "tools/set_home.py --check", ".ci/check_package.py"):
        assert any(check in line and not line.lstrip().startswith("#") for line in script), check


def test_the_test_workflow_sets_up_as_readme_says_and_runs_ci():
    lines = run_lines(ROOT / ".github" / "workflows" / "test.yml")
    assert all(command in lines for command in SETUP), lines
    assert lines[-1] == ".ci/run"
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    assert set(workflow[True]) == {"push", "pull_request"}  # YAML 1.1 reads the key `on` as True
    job = workflow["jobs"]["test"]
    cache = next(step for step in job["steps"] if "actions/cache@" in step.get("uses", ""))
    assert cache["with"]["path"] == job["env"]["ALEXNET_TUTORIAL_DATA"]
    download = next(step for step in job["steps"] if "torchvision.datasets.MNIST" in step.get("run", ""))
    assert download["if"] == f"steps.{cache['id']}.outputs.cache-hit != 'true'"


def test_the_pages_workflow_builds_with_readmes_command_and_deploys_from_main():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    assert workflow[True]["push"] == {"branches": ["main"]}
    lines = run_lines(ROOT / ".github" / "workflows" / "pages.yml")
    assert SETUP[0] in lines and BUILD in lines
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    upload = next(step for step in build["steps"] if "upload-pages-artifact@" in step.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert workflow["permissions"] == {} and build["permissions"]["contents"] == "read"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_and_keeps_no_credentials(workflow):
    assert WORKFLOWS, "no workflows in .github/workflows"
    uses = re.findall(r"^\s*(?:-\s+)?uses:\s*(.+)$", workflow.read_text(), re.MULTILINE)
    assert uses
    for use in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", use), use
    steps = [step for job in yaml.safe_load(workflow.read_text())["jobs"].values() for step in job["steps"]]
    for step in steps:
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
