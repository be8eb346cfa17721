"""Images per second of one training step of the package's AlexNet, for several settings
side by side: precision, memory layout, batch size, threads, and optionally torch.compile.

Random inputs, so the data path is not part of it: this is the model's cost alone. The
settings take turns (round-robin, ``--rounds`` times) so that other load on the machine
touches all of them alike, and each one's fastest round is reported: other load only ever
slows a round down.

    python benchmarks/step.py --json benchmarks/results/step-cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch import nn

from alexnet_tutorial.devices import autocast, cpu_has_native_bf16, describe_device, pick_device
from alexnet_tutorial.model import AlexNet

# name: (batch size, channels_last, precision, threads or None for the default)
SETTINGS = {
    "fp32, contiguous, batch 128": (128, False, "fp32", None),
    "fp32, channels_last, batch 128": (128, True, "fp32", None),
    "bf16, contiguous, batch 128": (128, False, "bf16", None),
    "bf16, channels_last, batch 128 (default)": (128, True, "bf16", None),
    "bf16, channels_last, batch 64": (64, True, "bf16", None),
    "bf16, channels_last, batch 256": (256, True, "bf16", None),
    "bf16, channels_last, batch 512": (512, True, "bf16", None),
    "bf16, channels_last, batch 128, 1 thread": (128, True, "bf16", 1),
    # fp32 alone, for CPUs without native bf16 (where the bf16 settings are left out)
    "fp32, channels_last, batch 64": (64, True, "fp32", None),
    "fp32, channels_last, batch 256": (256, True, "fp32", None),
    "fp32, channels_last, batch 128, 1 thread": (128, True, "fp32", 1),
}


def make_step(device, batch, channels_last, precision, compile_model=False):
    """A closure that runs one SGD step on a fixed random batch."""
    torch.manual_seed(0)
    model = AlexNet().to(device)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    forward = torch.compile(model) if compile_model else model

    def step():
        with autocast(device, precision):
            loss = nn.functional.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()  # waits for the device, as the training loop does

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting per round (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="round-robin passes over the settings (default 5)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile on the default setting")
    parser.add_argument("--json", metavar="OUT", default=None)
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    print(f"# {describe_device(device)}", flush=True)
    default_threads = torch.get_num_threads()
    settings = dict(SETTINGS)
    if device.type == "cpu" and not cpu_has_native_bf16():  # emulated bf16: many times slower per step
        settings = {k: v for k, v in settings.items() if v[2] != "bf16"}
        print("# no native bf16 on this CPU: the bf16 settings are left out", flush=True)
    steps = {name: make_step(device, *s[:3]) for name, s in settings.items()}
    compile_seconds = None
    if args.compile:
        name = "bf16, channels_last, batch 128, torch.compile"
        settings[name] = (128, True, "bf16", None)
        steps[name] = make_step(device, 128, True, "bf16", compile_model=True)
        started = time.perf_counter()
        steps[name]()  # the first call compiles forward and backward
        compile_seconds = time.perf_counter() - started
    for name, step in steps.items():  # warm-up: the first steps choose kernels
        torch.set_num_threads(settings[name][3] or default_threads)
        step(), step()
    rates = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            torch.set_num_threads(settings[name][3] or default_threads)
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps * settings[name][0] / (time.perf_counter() - started))
    torch.set_num_threads(default_threads)

    best = {name: max(r) for name, r in rates.items()}
    base = best["fp32, contiguous, batch 128"]
    print(f"{device}, torch {torch.__version__}, {default_threads} threads; fastest of {args.rounds} rounds "
          f"of {args.steps} steps, random data")
    print(f"{'setting':<48}{'images/s':>10}{'vs fp32 contiguous':>20}")
    for name, rate in best.items():
        print(f"{name:<48}{rate:>10,.0f}{rate / base:>19.2f}x")
    if compile_seconds is not None:
        print(f"torch.compile: first step (compilation) took {compile_seconds:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "torch": torch.__version__, "device": str(device),
                       "threads": default_threads, "compile_seconds": compile_seconds,
                       "images_per_s": best,
                       "rounds": rates}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
