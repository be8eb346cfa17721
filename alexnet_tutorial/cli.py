"""The command line: ``alexnet-tutorial train | evaluate | predict`` (see README).

Every failure the user can cause (a bad argument, a missing or damaged file, a device that
is not there: :class:`alexnet_tutorial.errors.UserError`) ends with one line on stderr and exit
status 2, never a traceback; Ctrl-C with one line and status 130. Any other exception is a bug
in the package and keeps its traceback.
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


def _decay(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a decay from 0 up to (not including) 1, got {text}")
    return value


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


# The train flags that set a TrainConfig field of the same name.
_TRAIN_FIELDS = ("epochs", "batch_size", "lr", "seed", "device", "precision", "data_dir", "subset", "loader",
                 "width_mult", "checkpoint_every", "channels_last", "compile", "eval_batch_size", "average")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _layout(text):
    choices = {"auto": None, "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return choices[text]


def _resumable_flags() -> str:
    from .config import RESUMABLE

    return ", ".join(_flag(name) for name in RESUMABLE)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import TrainConfig
    from .devices import DEVICES, PRECISIONS

    parser = _Parser(prog="alexnet-tutorial", description="Train, evaluate and use an AlexNet on MNIST.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{train,evaluate,predict}", parser_class=_Parser)
    sub.required = True
    _add_train(sub.add_parser("train", help="train on MNIST and write a checkpoint"), TrainConfig(), DEVICES,
               PRECISIONS)
    _add_evaluate_and_predict(sub, DEVICES)
    return parser


def _add_train(t, d, devices, precisions) -> None:
    # Every setting defaults to None ("not given"), so that a resumed run can tell the flags
    # the user typed from the defaults.
    t.add_argument("--epochs", type=_positive_int, help=f"passes over the training set (default {d.epochs})")
    t.add_argument("--batch-size", type=_positive_int,
                   help="images per step, all processes together; under torchrun each takes an equal share "
                        "(default: chosen for the run's length, 128 for a full run; the log's recipe: line "
                        "says what was chosen)")
    t.add_argument("--lr", type=_positive_float,
                   help="peak learning rate (default: follows the batch size, 0.05 at batch 128)")
    t.add_argument("--average", type=_decay, metavar="DECAY",
                   help="evaluate and save a moving average of the weights, this decay per step; 0: none "
                        "(default: 0.99 for runs of 60,000 to 299,999 training images, else none)")
    t.add_argument("--seed", type=_int, help=f"0 to 2**32-1 (default {d.seed})")
    t.add_argument("--device", choices=devices, help="default auto: CUDA, else MPS, else CPU")
    t.add_argument("--precision", choices=precisions, help="default auto: bf16 or fp16 where native, else fp32")
    t.add_argument("--channels-last", type=_layout, metavar="{auto,on,off}",
                   help="NHWC memory layout (default auto: on for CUDA and CPU, off for MPS)")
    t.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the model (slow to start; pays off on GPUs)")
    t.add_argument("--data-dir", help="MNIST root (default: $ALEXNET_TUTORIAL_DATA or ~/.cache/alexnet-tutorial)")
    t.add_argument("--subset", type=_positive_int, help="train on the first N training images")
    t.add_argument("--loader", choices=("tensor", "torchvision"), help="default tensor (fast)")
    t.add_argument("--width-mult", type=_positive_float, help="scale all widths (default 1)")
    t.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                   help="also checkpoint every STEPS optimizer steps, counted over the whole run "
                        "(default: at epoch ends only)")
    t.add_argument("--eval-batch-size", type=_positive_int, metavar="N",
                   help=f"images per batch when evaluating (default {d.eval_batch_size})")
    t.add_argument("--out", help="checkpoint to write (default alexnet.pt, or with --resume the resumed file; "
                                 "best epoch beside it, e.g. alexnet.best.pt)")
    t.add_argument("--resume", metavar="FILE", default=None,
                   help=f"continue the run saved in FILE; {_resumable_flags()} may change (--epochs only "
                        "upwards), other flags must match it")
    t.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    t.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_evaluate_and_predict(sub, devices) -> None:
    e = sub.add_parser("evaluate", help="test accuracy and loss of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--device", choices=devices, default="auto")
    e.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="read the digit in each image file",
                       description="Read the digit in each image file. An image that cannot be read gives one "
                                   "line on stderr; every other image still gets its result, and the exit "
                                   "status is 2 when any image failed.")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--device", choices=devices, default="auto")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list on stdout, one object per image in order; an image that cannot be '
                        'read is {"image": ..., "error": ...} there (and its line goes to stderr too)')


def _train(args, out, err) -> int:
    from .checkpoint import best_path
    from .config import ResumeMismatch
    from .distributed import is_main
    from .run import train

    log = (lambda msg: print(msg, file=err)) if args.json else (lambda msg: print(msg, file=out))
    given = {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name) is not None}
    path = args.out or args.resume or "alexnet.pt"
    try:
        result = train(given, out=path, resume=args.resume, force=args.force, progress=not args.no_progress, log=log)
    except ResumeMismatch as exc:
        raise _UsageError(f"alexnet-tutorial train: {_flag(exc.name)} {exc.given} differs from {exc.saved}, the "
                          f"setting of the run in {args.resume}; a resumed run keeps its recipe (change only "
                          f"{_resumable_flags()})") from None
    if not is_main():  # under torchrun rank 0 reports for all
        return 0

    final = result.history[-1]
    best = best_path(path) if best_path(path).exists() else None
    summary = {"checkpoint": str(path), "best_checkpoint": str(best) if best else None,
               "device": result.device, "precision": result.precision,
               "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
               "best_epoch": result.best_epoch, "best_accuracy": result.best_accuracy,
               "compile_seconds": result.compile_seconds, "history": result.history}
    if args.json:
        print(json.dumps(summary, indent=2), file=out)
    else:
        where = f"best {best}" if best else "best epoch's weights in no file"
        print(f"final test accuracy {100 * final['test_accuracy']:.2f}% (best {100 * result.best_accuracy:.2f}% "
              f"after epoch {result.best_epoch}); checkpoint {path}, {where}", file=out)
    return 0


def _evaluate(args, out) -> int:
    from .checkpoint import load_model
    from .data import TensorLoader, mnist_tensors
    from .devices import pick_device
    from .training import evaluate

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


def _predict(args, out, err=None) -> int:
    """Every image's result that can be had; one line on ``err`` per image that cannot be read,
    and exit status 2 when any could not."""
    from .checkpoint import load_model
    from .devices import pick_device
    from .images import predict_files

    err = err or sys.stderr
    model = load_model(args.checkpoint).to(pick_device(args.device))
    results = predict_files(model, args.images, errors="report")
    for r in results:
        if "error" in r:
            print(f"alexnet-tutorial: error: {r['error']}", file=err)
        elif not args.json:
            top = ", ".join(f"{t['digit']} {100 * t['probability']:.1f}%" for t in r["top3"])
            print(f"{r['image']}: {r['digit']}  (top 3: {top})", file=out)
    if args.json:
        print(json.dumps(results, indent=2), file=out)
    return EXIT_USAGE if any("error" in r for r in results) else 0


def _one_line(exc: Exception) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message if message.startswith("alexnet-tutorial") else f"alexnet-tutorial: error: {message}"


def main(argv=None, out=None, err=None) -> int:
    """Run the command line; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        from .errors import UserError

        try:
            args = build_parser().parse_args(argv)
            if args.command == "train":
                return _train(args, out, err)
            if args.command == "evaluate":
                return _evaluate(args, out)
            return _predict(args, out, err)
        except (_UsageError, UserError) as exc:
            from .distributed import is_main

            if is_main():  # under torchrun every process fails alike: one line, not one per process
                print(_one_line(exc), file=err)
            return EXIT_USAGE
    except KeyboardInterrupt:
        print("alexnet-tutorial: interrupted; every checkpoint already written is intact", file=err)
        return 130
