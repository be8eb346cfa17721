"""benchmarks/speed.py and benchmarks/recipe.py run end to end (smoke mode: a few hundred
images, one epoch). Timings are not asserted: they depend on the machine."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_speed_smoke_prints_both_pipelines_side_by_side(tmp_path, data_dir):
    out = tmp_path / "speed.json"
    text = run("speed.py", "--smoke", "--device", "cpu", "--data-dir", str(data_dir), "--json", str(out))
    header = next(line for line in text.splitlines() if line.startswith("pipeline"))
    for column in ("precision", "layout", "batch", "images/s", "s to 99.0%", "final acc %", "peak MiB"):
        assert column in header
    assert any(line.startswith("original ") and " fp32 " in line for line in text.splitlines())
    assert any(line.startswith("package ") for line in text.splitlines())
    assert "package vs original" in text
    results = json.loads(out.read_text())["results"]
    assert [r["pipeline"] for r in results] == ["original", "package"]
    for r in results:
        assert r["images"] == 512 and r["images_per_s"] > 0 and r["peak_memory_mib"] > 0
        assert 0 <= r["final_accuracy"] <= 1 and len(r["curve"]) == 1
    assert results[0]["batch_size"] == 64 and results[0]["precision"] == "fp32"


def test_recipe_smoke_prints_a_row_per_variant(tmp_path, data_dir):
    out = tmp_path / "recipe.json"
    text = run("recipe.py", "--smoke", "--variants", "default", "no-shift", "--data-dir", str(data_dir),
               "--json", str(out))
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("variant"))
    for column in ("epochs", "test accuracy per seed", "mean", "train s"):
        assert column in header
    assert any(line.startswith("default ") for line in lines)
    assert any(line.startswith("no-shift ") for line in lines)
    runs = json.loads(out.read_text())["runs"]
    assert [r["variant"] for r in runs] == ["default", "no-shift"]
    assert all(r["config"]["subset"] == 256 and len(r["history"]) == 1 for r in runs)
