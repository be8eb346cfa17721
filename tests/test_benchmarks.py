"""benchmarks/speed.py and benchmarks/recipe.py run end to end (smoke mode: a few hundred
images, one epoch). Timings are not asserted: they depend on the machine."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (the folder is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_smoke_prints_both_pipelines_side_by_side(tmp_path, data_dir):
    out = tmp_path / "speed.json"
    text = run("speed.py", "--smoke", "--device", "cpu", "--data-dir", str(data_dir), "--json", str(out))
    header = next(line for line in text.splitlines() if line.startswith("pipeline"))
    for column in ("precision", "layout", "batch", "images/s", "s to 99.0%", "final acc %", "peak MiB"):
        assert column in header
    assert any(line.startswith("original ") and " fp32 " in line for line in text.splitlines())
    assert any(line.startswith("package ") for line in text.splitlines())
    assert "package vs original" in text
    assert "peak assumed: fp32 " in text  # and the share of it each pipeline achieved
    assert "% of the fp32 peak" in next(line for line in text.splitlines() if line.startswith("original:"))
    results = json.loads(out.read_text())["results"]
    assert [r["pipeline"] for r in results] == ["original", "package"]
    for r in results:
        assert r["images"] == 512 and r["images_per_s"] > 0 and r["peak_memory_mib"] > 0
        assert 0 <= r["final_accuracy"] <= 1 and len(r["curve"]) == 1
    assert results[0]["batch_size"] == 64 and results[0]["precision"] == "fp32"


def test_speed_stops_at_the_target_and_runs_the_one_epoch_recipe_with_and_without_an_average(tmp_path, data_dir):
    out = tmp_path / "speed.json"
    # 5% is reached at the first evaluation (a quarter of the epoch): training stops there. The
    # side-by-side ratio against the original is test_speed_smoke's (not trained again here).
    common = ["--pipelines", "package-1ep", "--subset", "2048", "--epochs", "2", "--eval-every", "0.25",
              "--target", "0.05", "--stop-at-target", "--device", "cpu", "--data-dir", str(data_dir)]
    run("speed.py", *common, "--json", str(out))
    run("speed.py", *common, "--average", "0.9", "--json", str(tmp_path / "averaged.json"))
    saved = json.loads(out.read_text())
    (plain,), (averaged,) = saved["results"], json.loads((tmp_path / "averaged.json").read_text())["results"]
    assert saved["target"] == 0.05 and plain["pipeline"] == averaged["pipeline"] == "package-1ep"
    for r in (plain, averaged):
        assert r["stopped_at_target"] and not r["stopped_at_max_seconds"]
        assert len(r["curve"]) == 1 and r["images"] == 512 and r["epoch_at_target"] == 0.25
        assert r["seconds_to_target"] == r["curve"][0]["train_seconds"] == pytest.approx(r["train_seconds"], abs=0.01)
        assert r["config"]["epochs"] == 1  # one epoch whatever --epochs says
    # 2,048 images are too few for the automatic average (resolve_recipe); --average sets one.
    assert (plain["config"]["average"], plain["evaluated"]) == (0.0, "the weights")
    assert (averaged["config"]["average"], averaged["evaluated"]) == (0.9, "the weights' moving average")
    # The automatic recipe for its own length, one epoch (resolve_recipe), not for --epochs 2.
    from alexnet_tutorial.config import TrainConfig
    one, two = (TrainConfig(subset=2048, epochs=epochs, data_dir=str(data_dir)).resolved() for epochs in (1, 2))
    assert (plain["config"]["dropout"], plain["config"]["label_smoothing"]) == (one.dropout, one.label_smoothing)
    assert one.dropout < two.dropout  # 0.0 and 0.01: the two lengths' recipes differ


def test_the_speed_pipeline_of_one_full_epoch_evaluates_the_average_train_keeps(data_dir):
    speed = load_benchmark("speed")
    built = speed.package_pipeline(torch.device("cpu"), 0, None, str(data_dir), 1, {"width_mult": 0.25})
    evaluated, train_loader, _, step, _, info = built
    assert info["config"]["average"] == 0.99 and info["evaluated"] == "the weights' moving average"
    before = {k: v.clone() for k, v in evaluated.state_dict().items()}
    images, labels = next(iter(train_loader))
    step(images, labels)
    step(images, labels)  # the second update moves the average part of the way to the weights
    assert any(not torch.equal(before[k], v) for k, v in evaluated.state_dict().items())


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


def test_recipe_sweep_trains_every_recipe_at_every_budget_and_tabulates_the_means(tmp_path, data_dir):
    out = tmp_path / "sweep.json"
    args = ["--recipes", "original", "auto", "--seeds", "0", "--data-dir", str(data_dir), "--json", str(out)]
    run("recipe.py", "--sweep", "--budgets", "200x1", *args)
    first = json.loads(out.read_text())["runs"]
    # A stopped sweep continues: the runs already in --json are kept, only the rest are trained.
    text = run("recipe.py", "--sweep", "--budgets", "200x1", "300x1", *args)
    assert "continuing" in text and "2 runs already in it are kept" in text
    assert json.loads(out.read_text())["runs"][:2] == first
    assert "200 x 1 original seed 0" not in text and "300 x 1 original seed 0" in text
    lines = text.splitlines()
    assert lines[0].startswith("$ ") and "--sweep" in lines[0]  # the command that made the table
    assert "CPU" in lines[1] or "GPU" in lines[1] or "MPS" in lines[1]  # the hardware it ran on
    header = next(line for line in lines if line.startswith("budget"))
    assert "original" in header and "auto" in header
    saved = json.loads(out.read_text())
    runs = saved["runs"]
    assert [(r["images"], r["recipe"]) for r in runs] == [(200, "original"), (200, "auto"), (300, "original"),
                                                          (300, "auto")]
    assert saved["device"] == lines[1].removeprefix("# ").split(";")[0]
    auto = next(r for r in runs if r["recipe"] == "auto")
    assert auto["config"]["batch_size"] == 32 and auto["config"]["lr"] == 0.0125  # resolved, not None
    row = next(line for line in lines if line.startswith("200 x 1"))
    mean = sum(100 * r["test_accuracy"] for r in runs if r["images"] == 200 and r["recipe"] == "original")
    assert f"{mean:.2f} (1)" in row


def test_the_large_batch_recipes_are_batch_1024_at_the_rules_rate_and_at_the_old_square_root_rate():
    from alexnet_tutorial.config import TrainConfig, resolve_recipe

    module = load_benchmark("recipe")
    full = resolve_recipe(TrainConfig(**module.RECIPES["batch-1024"], epochs=5))
    assert full.batch_size == 1024 and full.lr == pytest.approx(0.05)  # held at batch 128's peak rate
    assert (full.dropout, full.label_smoothing, full.shift) == (0.5, 0.1, 2)  # a full run's regularisation
    old = resolve_recipe(TrainConfig(**module.RECIPES["batch-1024-sqrt-lr"], epochs=5))
    assert old.batch_size == 1024 and old.lr == pytest.approx(0.05 * 8 ** 0.5, abs=1e-6)
    assert not {"batch-1024", "batch-1024-sqrt-lr"} & set(module.SIDE_BY_SIDE)  # opt-in: five full epochs per seed


ZEN3 = "vendor_id\t: AuthenticAMD\ncpu MHz\t\t: 2994.372\nflags\t\t: fpu sse2 avx fma avx2\n"
ZEN4 = "vendor_id\t: AuthenticAMD\ncpu MHz\t\t: 3000.0\nflags\t\t: avx fma avx2 avx512f avx512_bf16\n"
XEON_AMX = "vendor_id\t: GenuineIntel\ncpu MHz\t\t: 2100.000\nflags\t\t: avx fma avx2 avx512f avx512_bf16 amx_bf16\n"


@pytest.mark.parametrize("cpuinfo, fp32, bf16", [
    (ZEN3, 2 * 32 * 2.994372, None),           # AVX2 with FMA: 32 fp32 FLOP per cycle, bf16 emulated
    (ZEN4, 2 * 32 * 3.0, 2 * 64 * 3.0),        # AVX-512 on 256-bit units; avx512_bf16 doubles it
    (XEON_AMX, 2 * 64 * 2.1, 2 * 2048 * 2.1),  # two 512-bit FMA units; AMX's tiles for bf16
])
def test_speed_assumes_the_peak_the_cpus_flags_and_clock_give(cpuinfo, fp32, bf16):
    peak = load_benchmark("speed").cpu_peak(cpuinfo, threads=2)
    assert peak["fp32_gflops"] == pytest.approx(fp32)
    assert peak["bf16_gflops"] == (pytest.approx(bf16) if bf16 else None)

