"""Train recipes side by side and print how accurate and how fast each is.

Two modes. ``--variants``: ``TrainConfig()`` with one or two settings changed, on the full
training set (or ``--subset`` images), evaluated on the 10,000 test images after every epoch;
the table reports the final test accuracy per seed, their mean, and the training time
(evaluation excluded).

``--sweep``: fixed recipes against the package's automatic one (``resolve_recipe``) at several
budgets (images x epochs), every recipe trained with every seed, interleaved so that all of
them share the machine's conditions; the table gives the mean final test accuracy per budget
and recipe. The results that chose the package's defaults are in ``benchmarks/results/``;
see benchmarks/README.md.

    python benchmarks/recipe.py --epochs 2 --variants default lr=0.02 lr=0.1
    python benchmarks/recipe.py --sweep --budgets 2000x1 3000x1 10000x1 --seeds 0 1 2
    python benchmarks/recipe.py --sweep --budgets 60000x5 --recipes auto batch-1024 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.devices import describe_device, pick_device
from alexnet_tutorial.run import train

# name: the settings that differ from TrainConfig's defaults.
VARIANTS = {
    "default": {},
    "lr=0.02": {"lr": 0.02},
    "lr=0.1": {"lr": 0.1},
    "no-smoothing": {"label_smoothing": 0.0},
    "no-shift": {"shift": 0},
    "batch=256": {"batch_size": 256},
    "batch=256,lr=0.1": {"batch_size": 256, "lr": 0.1},
    "constant-lr": {"schedule": "constant", "lr": 0.01},
    "fp32": {"precision": "fp32"},
}

# The sweep's recipes: name: settings over TrainConfig's (None: the automatic recipe).
RECIPES = {
    # The original post's: batch 64, SGD lr 0.01 momentum 0.9 at a constant rate, no weight
    # decay, no dropout, no smoothing or shifts (on the fixed network and normalised data).
    # The fixed recipes keep no average of the weights: they are recipes from before it.
    "original": dict(batch_size=64, lr=0.01, weight_decay=0.0, schedule="constant", dropout=0.0,
                     label_smoothing=0.0, shift=0, average=0.0),
    # The book's quick mode before the automatic recipe: a hand-lowered lr, no regularisation.
    "old-quick": dict(batch_size=128, lr=0.01, dropout=0.0, label_smoothing=0.0, shift=0, average=0.0),
    # The fixed defaults before the automatic recipe (the full run's recipe at every length).
    "old-defaults": dict(batch_size=128, lr=0.05, dropout=0.5, label_smoothing=0.1, shift=2, average=0.0),
    "auto": {},
    # The automatic recipe without its average of the weights (what "auto" was before it).
    "no-average": dict(average=0.0),
    # The large-batch setting for GPUs: batch 1,024, the rest automatic (peak lr 0.05, as at 128).
    # Not in the default sweep: compare it with "auto" at 60000x5 (--recipes auto batch-1024
    # --budgets 60000x5), or at 60000x16, where it gets 944 steps.
    "batch-1024": dict(batch_size=1024),
    # What the rule gave batch 1,024 before (the square root of the linear rule: 0.05 x sqrt(8)).
    "batch-1024-sqrt-lr": dict(batch_size=1024, lr=0.141421),
}
SIDE_BY_SIDE = ["original", "old-quick", "old-defaults", "auto"]  # the default sweep
DEFAULT_BUDGETS = ["2000x1", "3000x1", "10000x1", "10000x2", "60000x1", "60000x5"]


def parse_budget(text: str) -> tuple[int, int]:
    """``"10000x2"`` -> (10000, 2): training images and epochs."""
    images, _, epochs = text.partition("x")
    return int(images), int(epochs or 1)


def run_recipe(name: str, images: int, epochs: int, seed: int, data_dir, precision: str) -> dict:
    """Train one sweep recipe at one budget with one seed."""
    cfg = TrainConfig(**RECIPES[name], epochs=epochs, seed=seed, subset=images if images < 60_000 else None,
                      data_dir=data_dir, precision=precision)
    result = train(cfg, progress=False, log=lambda _m: None)
    return {"recipe": name, "images": images, "epochs": epochs, "seed": seed,
            "config": result.config.to_dict(), "precision": result.precision,
            "test_accuracy": result.history[-1]["test_accuracy"],
            "train_seconds": sum(h["seconds"] for h in result.history), "history": result.history}


def sweep_table(rows: list[dict]) -> str:
    """Budgets down, recipes across: mean final test accuracy (%) and the seeds behind it."""
    names = [n for n in RECIPES if any(r["recipe"] == n for r in rows)]
    budgets = list(dict.fromkeys((r["images"], r["epochs"]) for r in rows))
    out = [f"{'budget':<14}" + "".join(f"{n:>14}" for n in names) + "  auto's recipe"]
    for images, epochs in budgets:
        cells = []
        here = [r for r in rows if (r["images"], r["epochs"]) == (images, epochs)]
        for n in names:
            accs = [100 * r["test_accuracy"] for r in here if r["recipe"] == n]
            cells.append(f"{sum(accs) / len(accs):>9.2f} ({len(accs)})" if accs else f"{'-':>14}")
        auto = next((r["config"] for r in here if r["recipe"] == "auto"), None)
        note = (f"  batch {auto['batch_size']}, lr {auto['lr']:g}, dropout {auto['dropout']:g}, "
                f"smoothing {auto['label_smoothing']:g}, shift {auto['shift']}"
                + (f", average {auto['average']:g}" if auto.get("average") else "")) if auto else ""
        out.append(f"{f'{images:,} x {epochs}':<14}" + "".join(cells) + note)
    out.append("mean test accuracy (%) over the seeds run (their number in brackets)")
    return "\n".join(out)


def run_variant(name: str, epochs: int, seed: int, subset: int | None, data_dir: str | None) -> dict:
    """Train one variant with one seed; returns its per-epoch history and totals."""
    cfg = TrainConfig(**{**VARIANTS[name], "epochs": epochs, "seed": seed, "subset": subset, "data_dir": data_dir})
    lines = []
    result = train(cfg, progress=False, log=lines.append)
    history = result.history
    return {"variant": name, "seed": seed, "epochs": epochs, "precision": result.precision,
            "device": result.device, "config": cfg.to_dict(),
            "test_accuracy": history[-1]["test_accuracy"],
            "train_seconds": sum(h["seconds"] for h in history),
            "history": history, "log": lines}


def table(rows: list[dict]) -> str:
    """One line per variant: accuracy per seed, their mean, and mean training seconds per run."""
    out = [f"{'variant':<20}{'epochs':>7}  {'test accuracy per seed (%)':<28}{'mean (%)':>9}{'train s':>9}"]
    names = list(dict.fromkeys(r["variant"] for r in rows))
    for name in names:
        runs = [r for r in rows if r["variant"] == name]
        accs = [100 * r["test_accuracy"] for r in runs]
        per_seed = " ".join(f"{a:.2f}" for a in accs)
        secs = sum(r["train_seconds"] for r in runs) / len(runs)
        out.append(f"{name:<20}{runs[0]['epochs']:>7}  {per_seed:<28}{sum(accs) / len(accs):>9.2f}{secs:>9.1f}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="fixed recipes against the automatic one, at --budgets")
    parser.add_argument("--budgets", nargs="+", default=DEFAULT_BUDGETS, metavar="IMAGESxEPOCHS",
                        help=f"with --sweep (default: {' '.join(DEFAULT_BUDGETS)})")
    parser.add_argument("--recipes", nargs="+", default=SIDE_BY_SIDE, choices=list(RECIPES),
                        help=f"with --sweep: which recipes (default: {' '.join(SIDE_BY_SIDE)})")
    parser.add_argument("--precision", default="auto", help="with --sweep (default auto)")
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS),
                        help="which variants to train (default: default)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run each variant with (default 0)")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long check: 256 images, 1 epoch")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ALEXNET_TUTORIAL_DATA)")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="also write every run's results to OUT; with --sweep an existing OUT is continued: "
                             "the runs already in it are kept and not trained again")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subset, args.epochs = args.subset or 256, 1

    def save():  # after every run, so that a stopped sweep keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"argv": sys.argv, "device": describe_device(pick_device("auto")), "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "runs": rows}, f, indent=2)

    started = time.perf_counter()
    rows = []
    if args.sweep:
        print(f"$ {' '.join(sys.argv)}")
        print(f"# {describe_device(pick_device('auto'))}; torch {torch.__version__}; "
              f"started {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}", flush=True)
        if args.json and os.path.exists(args.json):  # continue a stopped sweep
            with open(args.json) as f:
                rows = json.load(f)["runs"]
            print(f"# continuing {args.json}: {len(rows)} runs already in it are kept", flush=True)
        done = {(r["recipe"], r["images"], r["epochs"], r["seed"]) for r in rows}
        for budget in args.budgets:
            images, epochs = parse_budget(budget)
            for seed in args.seeds:
                for name in args.recipes:
                    if (name, images, epochs, seed) in done:
                        continue
                    row = run_recipe(name, images, epochs, seed, args.data_dir, args.precision)
                    rows.append(row)
                    save()
                    print(f"  {images:,} x {epochs} {name} seed {seed}: {100 * row['test_accuracy']:.2f}% "
                          f"({row['train_seconds']:.0f} s training)", flush=True)
        print()
        print(f"precision {rows[0]['precision']}; train s exclude evaluation")
        print(sweep_table(rows))
        print(f"total wall time {time.perf_counter() - started:.0f} s")
        return 0
    for name in args.variants:
        for seed in args.seeds:
            row = run_variant(name, args.epochs, seed, args.subset, args.data_dir)
            rows.append(row)
            save()
            print(f"  {name} seed {seed}: " + ", ".join(f"{100 * h['test_accuracy']:.2f}%" for h in row["history"])
                  + f" after each epoch; {row['train_seconds']:.1f} s training", flush=True)
    print()
    print(f"torch {torch.__version__}, {rows[0]['device']}, precision {rows[0]['precision']}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"training set: {args.subset or 60_000:,} images; train s excludes evaluation")
    print(table(rows))
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
