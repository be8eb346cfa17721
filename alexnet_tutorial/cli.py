"""The command line: ``alexnet-tutorial train | evaluate | predict`` (see README).

Every failure the user can cause (a bad argument, a missing or damaged file, a device that
is not there) ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage plus error."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from .training import DEVICES, PRECISIONS, TrainConfig

    d = TrainConfig()
    parser = _Parser(prog="alexnet-tutorial", description="Train, evaluate and use an AlexNet on MNIST.")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train on MNIST and write a checkpoint")
    t.add_argument("--epochs", type=_positive_int, default=d.epochs,
                   help=f"passes over the training set (default {d.epochs})")
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help=f"images per step, all processes together; under torchrun each takes an equal share "
                        f"(default {d.batch_size})")
    t.add_argument("--lr", type=_positive_float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    t.add_argument("--seed", type=_int, default=d.seed, help=f"default {d.seed}")
    t.add_argument("--device", choices=DEVICES, default=d.device, help="default auto: CUDA, else MPS, else CPU")
    t.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="default auto")
    t.add_argument("--data-dir", default=None,
                   help="MNIST root (default: $ALEXNET_TUTORIAL_DATA or ~/.cache/alexnet-tutorial)")
    t.add_argument("--subset", type=_positive_int, default=None, help="train on the first N training images")
    t.add_argument("--loader", choices=("tensor", "torchvision"), default=d.loader, help="default tensor (fast)")
    t.add_argument("--width-mult", type=_positive_float, default=d.width_mult, help="scale all widths (default 1)")
    t.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps (default: at epoch ends only)")
    t.add_argument("--out", default="alexnet.pt",
                   help="checkpoint to write (default alexnet.pt; best epoch in alexnet.best.pt)")
    t.add_argument("--resume", metavar="FILE", default=None, help="continue the run saved in FILE")
    t.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    t.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="test accuracy and loss of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", choices=DEVICES, default="auto")
    e.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="read the digit in each image file")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true")
    return parser


def _train(args, out, err) -> int:
    from .training import TrainConfig, train

    if args.resume and (args.force or args.out != "alexnet.pt"):
        raise _UsageError("alexnet-tutorial train: --resume continues FILE in place; "
                          "it takes neither --out nor --force")
    log = (lambda msg: print(msg, file=err)) if args.json else (lambda msg: print(msg, file=out))
    if args.resume:
        cfg = TrainConfig(data_dir=args.data_dir) if args.data_dir else None
        result = train(cfg, resume=args.resume, progress=not args.no_progress, log=log)
        path = args.resume
    else:
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          device=args.device, precision=args.precision, data_dir=args.data_dir,
                          subset=args.subset, loader=args.loader, width_mult=args.width_mult,
                          checkpoint_every=args.checkpoint_every or 0)
        result = train(cfg, out=args.out, force=args.force, progress=not args.no_progress, log=log)
        path = args.out
    from .checkpoint import best_path
    from .distributed import is_main

    if not is_main():  # under torchrun rank 0 reports for all
        return 0

    final = result.history[-1]
    summary = {"checkpoint": str(path), "best_checkpoint": str(best_path(path)),
               "device": result.device, "precision": result.precision,
               "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
               "best_epoch": result.best_epoch, "best_accuracy": result.best_accuracy,
               "history": result.history}
    if args.json:
        print(json.dumps(summary, indent=2), file=out)
    else:
        print(f"final test accuracy {100 * final['test_accuracy']:.2f}% (best {100 * result.best_accuracy:.2f}% "
              f"after epoch {result.best_epoch}); checkpoint {path}, best {best_path(path)}", file=out)
    return 0


def _evaluate(args, out) -> int:
    from .checkpoint import load_model
    from .data import TensorLoader, mnist_tensors
    from .training import evaluate, pick_device

    device = pick_device(args.device)
    model = load_model(args.checkpoint).to(device)
    images, labels = mnist_tensors(False, args.data_dir, device)
    result = evaluate(model, TensorLoader(images, labels, 1000), device)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, **result}, indent=2), file=out)
    else:
        print(f"{args.checkpoint}: test accuracy {100 * result['accuracy']:.2f}% "
              f"({result['count']:,} images), test loss {result['loss']:.4f}", file=out)
    return 0


def _predict(args, out) -> int:
    from .checkpoint import load_model
    from .images import predict_files

    model = load_model(args.checkpoint)
    results = predict_files(model, args.images)
    if args.json:
        print(json.dumps(results, indent=2), file=out)
    else:
        for r in results:
            top = ", ".join(f"{t['digit']} {100 * t['probability']:.1f}%" for t in r["top3"])
            print(f"{r['image']}: {r['digit']}  (top 3: {top})", file=out)
    return 0


def main(argv=None, out=None, err=None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    from .checkpoint import CheckpointError
    from .data import DataError
    from .images import ImageError

    try:
        args = build_parser().parse_args(argv)
        if args.command == "train":
            return _train(args, out, err)
        if args.command == "evaluate":
            return _evaluate(args, out)
        return _predict(args, out)
    except (_UsageError, DataError, CheckpointError, ImageError, FileExistsError, ValueError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not message.startswith("alexnet-tutorial"):
            message = f"alexnet-tutorial: error: {message}"
        from .distributed import is_main

        if is_main():  # under torchrun every process fails alike: one line, not one per process
            print(message, file=err)
        return EXIT_USAGE
    except OSError as exc:  # disk full, permission denied while writing, ...
        print(f"alexnet-tutorial: error: {exc.strerror or exc}"
              f"{': ' + str(exc.filename) if getattr(exc, 'filename', None) else ''}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("alexnet-tutorial: interrupted", file=err)
        return 130
