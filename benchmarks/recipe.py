"""Train a few variants of the default recipe and print how accurate and how fast each is.

Each variant is ``TrainConfig()`` with one or two settings changed, trained on the full
training set (or ``--subset`` images) and evaluated on the 10,000 test images after every
epoch. The table reports the final test accuracy per seed, their mean, and the training time
(evaluation excluded). The runs that chose the package's defaults are in
``benchmarks/results/recipe-*.txt``; see benchmarks/README.md.

    python benchmarks/recipe.py --epochs 2 --variants default lr=0.02 lr=0.1
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from alexnet_tutorial.training import TrainConfig, train

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
    parser.add_argument("--variants", nargs="+", default=["default"], choices=list(VARIANTS),
                        help="which variants to train (default: default)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run each variant with (default 0)")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long check: 256 images, 1 epoch")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ALEXNET_TUTORIAL_DATA)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write every run's results to OUT")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subset, args.epochs = args.subset or 256, 1

    def save():  # after every run, so that a stopped sweep keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"argv": sys.argv, "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "runs": rows}, f, indent=2)

    started = time.perf_counter()
    rows = []
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
