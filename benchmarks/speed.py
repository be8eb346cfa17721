"""The original write-up's pipeline against this package's default one, side by side.

One command trains both on the same MNIST files and prints one table: training images per
second, training time until the test accuracy first reaches 99.0%, final test accuracy and
peak memory, with the ratios. Both are evaluated on the 10,000 test images at the same
points (every ``--eval-every`` of an epoch); the clock stops while they are evaluated, so
the times are training time only. Each pipeline runs in its own fresh process, so that its
peak memory is its own.

The original pipeline is the blog post's code as written, with only its test-split bug fixed
(``train=False``): its model (no ReLU after conv3 and conv4, none between the linear
layers, pooling before ReLU, ``x.view``), ``ToTensor`` per item and no normalisation,
``DataLoader`` batch 64 shuffled, fp32, SGD lr 0.01 momentum 0.9 at a constant rate.

The package's pipeline is what ``alexnet-tutorial train`` does with its defaults: the whole
set normalised on the device in two tensors, index-slice batches with random shifts,
channels_last, bf16/fp16 autocast where the hardware runs it natively, and ``TrainConfig``'s
recipe. It runs unchanged on a CUDA GPU (``--device auto`` picks it). ``package-1ep`` (opt-in,
``--pipelines``) is the same pipeline for one epoch whatever ``--epochs`` says, with the
automatic recipe for that one epoch: what ``alexnet-tutorial train --epochs 1`` does. Where
that recipe keeps a moving average of the weights (``TrainConfig.average``: one epoch of the
full set does), the pipeline updates it after every step, inside the timed loop, and evaluates
the average, as ``train`` does.

    python benchmarks/speed.py --json benchmarks/results/speed-cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import sys
import time

import torch
from torch import nn

from alexnet_tutorial.config import TrainConfig
from alexnet_tutorial.data import TensorLoader, mnist_dataset, subset_indices
from alexnet_tutorial.devices import cpuinfo, cudnn_autotune, describe_device, pick_device, synchronize
from alexnet_tutorial.loaders import build_loaders
from alexnet_tutorial.model import AlexNet
from alexnet_tutorial.run import set_up
from alexnet_tutorial.training import RunningLoss, evaluate, train_steps

TARGET = 0.99  # the test accuracy whose first crossing is timed
_KEEP = contextlib.ExitStack()  # settings a pipeline keeps for its whole process


class OriginalAlexNet(nn.Module):
    """The write-up's network exactly as printed (its tab turned into spaces so that it runs)."""

    def __init__(self, width_mult=1):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, 32, kernel_size=3, padding=1),
                                    nn.MaxPool2d(kernel_size=2, stride=2), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Conv2d(32, 64, kernel_size=3, padding=1),
                                    nn.MaxPool2d(kernel_size=2, stride=2), nn.ReLU(inplace=True))
        self.layer3 = nn.Sequential(nn.Conv2d(64, 128, kernel_size=3, padding=1))
        self.layer4 = nn.Sequential(nn.Conv2d(128, 256, kernel_size=3, padding=1))
        self.layer5 = nn.Sequential(nn.Conv2d(256, 256, kernel_size=3, padding=1),
                                    nn.MaxPool2d(kernel_size=3, stride=2), nn.ReLU(inplace=True))
        self.fc1 = nn.Linear(256 * 3 * 3, 1024)
        self.fc2 = nn.Linear(1024, 512)
        self.fc3 = nn.Linear(512, 10)

    def forward(self, x):
        x = self.layer5(self.layer4(self.layer3(self.layer2(self.layer1(x)))))
        x = x.view(-1, 256 * 3 * 3)
        return self.fc3(self.fc2(self.fc1(x)))


def original_pipeline(device, seed, subset, data_dir):
    """The write-up's loaders, model, loss and optimizer; returns (model, train_loader, test_loader, step)."""
    from torchvision import transforms

    transform = transforms.ToTensor()  # per item, no normalisation
    trainset = mnist_dataset(True, data_dir, transform)
    testset = mnist_dataset(False, data_dir, transform)  # the fix: train=False
    if subset:
        trainset = torch.utils.data.Subset(trainset, subset_indices(trainset.targets, subset).tolist())
    generator = torch.Generator().manual_seed(seed)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=64, shuffle=True, generator=generator)
    testloader = torch.utils.data.DataLoader(testset, batch_size=64, shuffle=False)
    torch.manual_seed(seed)
    net = OriginalAlexNet().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step(images, labels):
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = criterion(net(images), labels)
        loss_item = loss.item()
        loss.backward()
        optimizer.step()
        return loss_item

    info = {"precision": "fp32", "memory_format": "contiguous", "batch_size": 64,
            "loader": "torchvision DataLoader, ToTensor per item"}
    return net, trainloader, testloader, step, "fp32", info


def package_pipeline(device, seed, subset, data_dir, epochs, settings=None):
    """``TrainConfig()``'s defaults (with ``settings`` over them: batch size, compile, ...)
    set up by the package's own ``set_up`` and trained by its own loop, ``train_steps``, one
    batch per call, as ``fit`` does (cuDNN autotuning included)."""
    cfg = TrainConfig(**{**dict(epochs=epochs, seed=seed, subset=subset, data_dir=data_dir), **(settings or {})})
    cfg = cfg.resolved()  # the automatic recipe for this run's length, as train() resolves it
    train_loader, test_loader = build_loaders(cfg, device)
    torch.manual_seed(seed)
    model = AlexNet(width_mult=cfg.width_mult, dropout=cfg.dropout)
    setup = set_up(model, cfg, device, len(train_loader))
    _KEEP.enter_context(cudnn_autotune(device))  # for the rest of this process, as fit does for its run
    running = RunningLoss(device)
    done = [0]

    def step(images, labels):  # the package's loop over this one batch
        done[0] = train_steps(setup.net, [(images, labels)], setup.optimizer, setup.loss_fn, setup.lr_at, done[0],
                              running, device=device, precision=setup.precision, scaler=setup.scaler,
                              channels_last=setup.channels_last, average=setup.average)

    info = {"evaluated": "the weights' moving average" if setup.average else "the weights",
            "precision": setup.precision, "memory_format": "channels_last" if setup.channels_last else "contiguous",
            "batch_size": cfg.batch_size, "loader": "TensorLoader (whole set on the device)",
            "config": cfg.to_dict()}
    evaluated = setup.average.module if setup.average else model  # as fit evaluates
    return evaluated, train_loader, test_loader, step, setup.precision, info


def forward_flops(model: nn.Module) -> int:
    """Floating-point operations of one 1x28x28 image's forward pass through the conv and
    linear layers (2 per multiply-add); a training step costs about three times this."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output[0].numel() * k
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros(1, 1, 28, 28, device=param.device))
    finally:
        for h in hooks:
            h.remove()
    return total


def eval_points(steps_per_epoch: int, every: float) -> list[int]:
    """The steps of an epoch (1-based) after which to evaluate: every ``every`` of it, and its end."""
    k = max(1, round(1 / every))
    return sorted({max(1, round(i * steps_per_epoch / k)) for i in range(1, k + 1)})


def run_pipeline(name, device_name, epochs, seed, subset, data_dir, eval_every, max_seconds, settings=None,
                 stop_at_target=False, target=TARGET):
    """Train one pipeline, timing training only; returns a dict of results. ``stop_at_target``:
    stop at the first evaluation that reaches ``target`` (the time to it is then known)."""
    device = pick_device(device_name)
    start_rss_mib = peak_rss_mib()  # what importing PyTorch and the package already took
    setup_started = time.perf_counter()
    if name.startswith("package-1ep"):
        epochs = 1  # and the recipe chosen for one epoch
    if name == "original":
        built = original_pipeline(device, seed, subset, data_dir)
    else:
        built = package_pipeline(device, seed, subset, data_dir, epochs, settings)
    model, train_loader, test_loader, step, precision, info = built
    setup_seconds = time.perf_counter() - setup_started
    flops = forward_flops(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps_per_epoch = len(train_loader)
    points = set(eval_points(steps_per_epoch, eval_every))
    curve, images_seen, train_seconds, stopped, reached_target = [], 0, 0.0, False, False
    model.train()
    for epoch in range(epochs):
        if isinstance(train_loader, TensorLoader):
            train_loader.set_epoch(epoch)
        synchronize(device)
        started = time.perf_counter()
        for i, (images, labels) in enumerate(train_loader, start=1):
            step(images, labels)
            images_seen += len(labels)
            at_limit = max_seconds is not None and train_seconds + time.perf_counter() - started >= max_seconds
            if i in points or at_limit:
                synchronize(device)
                train_seconds += time.perf_counter() - started  # the clock stops here
                accuracy = evaluate(model, test_loader, device, precision)["accuracy"]
                curve.append({"epoch": round(epoch + i / steps_per_epoch, 4), "images": images_seen,
                              "train_seconds": round(train_seconds, 3), "test_accuracy": accuracy})
                reached_target = stop_at_target and accuracy >= target
                if at_limit or reached_target:
                    stopped = at_limit
                    break
                synchronize(device)
                started = time.perf_counter()  # and starts again
        if stopped or reached_target:
            break
    reached = next((c for c in curve if c["test_accuracy"] >= target), None)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        memory_kind = "torch.cuda.max_memory_allocated"
    else:
        peak_mib, memory_kind = peak_rss_mib(), "peak RSS of the process"
    return {"pipeline": name, "device": str(device), **info, "epochs": epochs, "seed": seed,
            "stopped_at_max_seconds": stopped, "stopped_at_target": reached_target,
            "setup_seconds": round(setup_seconds, 2),
            "train_seconds": round(train_seconds, 2), "images": images_seen,
            "images_per_s": images_seen / train_seconds if train_seconds > 0 else 0.0,
            "forward_flops_per_image": flops,
            "seconds_to_target": reached["train_seconds"] if reached else None,
            "epoch_at_target": reached["epoch"] if reached else None,
            "final_accuracy": curve[-1]["test_accuracy"] if curve else None,
            "peak_memory_mib": round(peak_mib, 1), "memory_kind": memory_kind,
            "rss_before_setup_mib": round(start_rss_mib, 1), "curve": curve}


def cpu_peak(text: str, threads: int) -> dict:
    """The peak arithmetic rate of ``threads`` cores this benchmark assumes, from /proc/cpuinfo:
    cores x FLOP per cycle x clock. FLOP per cycle per core, fp32: 32 with AVX2 and FMA (two
    256-bit FMA units: Intel since Haswell, AMD Zen 2 to 4, whose AVX-512 runs on the same
    units), 64 on an Intel CPU with AVX-512 (two 512-bit units, as on Xeon Scalable), 16 with
    AVX alone. bf16, only where native: twice fp32 with ``avx512_bf16``, 2,048 with
    ``amx_bf16`` (AMX: 1,024 multiply-adds per cycle). A rough ceiling, not a promise: the
    clock is /proc/cpuinfo's (``text``, its first processor), which a turbo exceeds and a busy
    or hot CPU falls below."""
    fields = cpuinfo(text)
    flags = set(fields.get("flags", "").split())
    ghz = float(fields["cpu MHz"]) / 1000 if fields.get("cpu MHz") else None
    intel = fields.get("vendor_id") == "GenuineIntel"
    if "avx512f" in flags and intel:
        fp32, isa = 64, "AVX-512, two FMA units"
    elif {"avx2", "fma"} <= flags:
        fp32, isa = 32, "AVX2 and FMA"
    elif "avx" in flags:
        fp32, isa = 16, "AVX"
    else:
        fp32, isa = 8, "SSE"
    bf16 = 2048 if "amx_bf16" in flags else 2 * fp32 if "avx512_bf16" in flags else None
    peak = {"threads": threads, "ghz": ghz, "isa": isa, "fp32_flop_per_cycle": fp32, "bf16_flop_per_cycle": bf16}
    for name, per_cycle in (("fp32", fp32), ("bf16", bf16)):
        peak[f"{name}_gflops"] = threads * per_cycle * ghz if per_cycle and ghz else None
    return peak


def describe_peak(peak: dict) -> str:
    if not peak["fp32_gflops"]:
        return "peak assumed: unknown (no clock in /proc/cpuinfo)"
    text = (f"peak assumed: fp32 {peak['fp32_gflops']:.0f} GFLOP/s ({peak['threads']} threads x "
            f"{peak['fp32_flop_per_cycle']} FLOP/cycle, {peak['isa']}, x {peak['ghz']:.2f} GHz)")
    if peak["bf16_gflops"]:
        return text + f"; bf16 {peak['bf16_gflops']:,.0f} GFLOP/s ({peak['bf16_flop_per_cycle']:,} FLOP/cycle)"
    return text + "; bf16 not native"


def peak_rss_mib() -> float:
    """The most resident memory this process has used so far, in MiB."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil
        return psutil.Process().memory_info().peak_wset / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _child(queue, *args):
    try:
        queue.put(run_pipeline(*args))
    except BaseException as exc:  # report, so that the parent does not wait forever
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def run_isolated(*args) -> dict:
    """``run_pipeline`` in a fresh process (its own peak memory, no state left by the other)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"pipeline {args[0]} failed: {result['error']}")
    return result


def _fmt_time(r):
    if r["seconds_to_target"] is None:
        return "not reached"
    return f"{r['seconds_to_target']:.1f} (epoch {r['epoch_at_target']:g})"


def table(results: list[dict], target: float = TARGET) -> str:
    """The side-by-side table, with a ratio row when both pipelines ran."""
    head = (f"{'pipeline':<16}{'precision':<11}{'layout':<15}{'batch':>6}{'images/s':>10}"
            f"{f'  s to {100 * target:.1f}% (at epoch)':<28}{'final acc %':>12}{'peak MiB':>10}")
    lines = [head]
    for r in results:
        final = f"{100 * r['final_accuracy']:.2f}" if r["final_accuracy"] is not None else "-"
        lines.append(f"{r['pipeline']:<16}{r['precision']:<11}{r['memory_format']:<15}{r['batch_size']:>6}"
                     f"{r['images_per_s']:>10,.0f}  {_fmt_time(r):<26}{final:>12}{r['peak_memory_mib']:>10,.0f}")
    by = {r["pipeline"]: r for r in results}
    for name in ("package", "package-1ep"):
        if "original" not in by or name not in by:
            continue
        o, p = by["original"], by[name]
        speed = p["images_per_s"] / o["images_per_s"] if o["images_per_s"] else float("nan")
        if o["seconds_to_target"] and p["seconds_to_target"]:
            t = f"{o['seconds_to_target'] / p['seconds_to_target']:.2f}x sooner"
        else:
            t = "-"
        mem = p["peak_memory_mib"] / o["peak_memory_mib"] if o["peak_memory_mib"] else float("nan")
        lines.append(f"{name + ' vs original':<48}{speed:>9.2f}x  {t:<26}{'':>12}{mem:>9.2f}x")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per pipeline (default 5)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="default auto: CUDA, else MPS, else CPU")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop a pipeline after this much training time (default: no limit)")
    parser.add_argument("--stop-at-target", action="store_true",
                        help="stop each pipeline once it reaches the target accuracy")
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"the test accuracy whose first crossing is timed (default {TARGET})")
    parser.add_argument("--eval-every", type=float, default=0.25,
                        help="evaluate on the test set every this fraction of an epoch (default 0.25)")
    parser.add_argument("--pipelines", nargs="+", default=["original", "package"],
                        choices=("original", "package", "package-1ep"),
                        help="default original and package; package-1ep: the package for one epoch only")
    parser.add_argument("--average", type=float, default=None, metavar="DECAY",
                        help="the package pipelines' moving average of the weights (default: TrainConfig's, "
                             "chosen for the run's length; 0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="the package pipeline's batch size (default: TrainConfig's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the package pipeline's model")
    parser.add_argument("--smoke", action="store_true",
                        help="a quick end-to-end check: 512 images, 1 epoch, evaluated once")
    parser.add_argument("--data-dir", default=None, help="MNIST root (default: $ALEXNET_TUTORIAL_DATA)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the results to OUT")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subset, args.epochs, args.eval_every = args.subset or 512, 1, 1.0
    if not 0 < args.eval_every <= 1:
        parser.error("--eval-every must be a fraction of an epoch in (0, 1]")
    if args.average is not None and not 0 <= args.average < 1:
        parser.error("--average must be a decay in [0, 1)")
    if not 0 < args.target <= 1:
        parser.error("--target must be a test accuracy in (0, 1]")

    device = pick_device(args.device)
    print(f"# {describe_device(device)}, torch {torch.__version__}", flush=True)
    settings = {k: v for k, v in (("batch_size", args.batch_size), ("compile", args.compile),
                                  ("average", args.average)) if v is not None and v is not False}
    started = time.perf_counter()
    results = []
    for name in args.pipelines:
        r = run_isolated(name, args.device, args.epochs, args.seed, args.subset, args.data_dir,
                         args.eval_every, args.max_seconds, settings if name.startswith("package") else None,
                         args.stop_at_target, args.target)
        results.append(r)
        print(f"  {name}: " + ", ".join(f"{c['epoch']:g}:{100 * c['test_accuracy']:.2f}%" for c in r["curve"]),
              flush=True)
    print()
    print(f"{describe_device(device)}, torch {torch.__version__}; {args.epochs} epoch(s) of "
          f"{args.subset or 60_000:,} training images each, test accuracy on 10,000 images every "
          f"{args.eval_every:g} epoch (evaluation not timed); seed {args.seed}")
    print(table(results, args.target))
    peak = None
    if device.type == "cpu":
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo") as f:
                peak = cpu_peak(f.read(), torch.get_num_threads())
        if peak:
            print(describe_peak(peak))
    for r in results:
        achieved = 3 * r["forward_flops_per_image"] * r["images_per_s"] / 1e9
        share = (peak or {}).get(f"{r['precision']}_gflops")
        print(f"{r['pipeline']}: {r['forward_flops_per_image'] / 1e6:.0f} MFLOP per image forward, about "
              f"{3 * r['forward_flops_per_image'] / 1e6:.0f} per training image; achieved "
              f"{achieved:.0f} GFLOP/s while training"
              + (f", {100 * achieved / share:.0f}% of the {r['precision']} peak" if share else ""))
    print(f"total wall time {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "hardware": describe_device(device), "torch": torch.__version__,
                       "cpu_peak": peak,
                       "target": args.target, "eval_every": args.eval_every, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
