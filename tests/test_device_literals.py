"""No device assumption: the book and the package run on CPU, CUDA and Apple MPS alike.

A literal device (``evaluate(model, loader, "cpu")``, ``.to("cuda")``, ``device="mps"``,
``torch.device("cpu")``, ``model.cuda()``) where the model's or the run's device belongs
works on the machine it was written on and stops with a device-mismatch error on the others.
This test reads the code of every notebook cell, every package module and every benchmark
script with :mod:`ast` and fails on such a literal, unless it is one of the few places
listed in ``ALLOWED``, each with its reason.

Mentions that are not a device being passed are not flagged: comparisons
(``device.type == "cuda"``), dictionary keys (``rng["cuda"]``), lists of choices
(``choices=("auto", "cpu", "cuda", "mps")``), attribute names (``getattr(torch.backends, "mps")``)
and text inside longer strings.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*ROOT.glob("book/*.ipynb"), *ROOT.glob("alexnet_tutorial/*.py"), *ROOT.glob("benchmarks/*.py")])

DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")
MOVES = {"cpu", "cuda", "mps", "xpu"}  # tensor and module methods that move to a fixed device
NAME_ONLY = {"getattr", "hasattr", "setattr", "delattr"}  # their string arguments name attributes


@dataclass(frozen=True)
class Allowed:
    file: str    # relative to the repository root
    code: str    # the finding as :func:`findings` writes it
    scope: str   # the function it is in ("" for module level or a notebook cell outside any function)
    reason: str


ALLOWED = [
    Allowed("book/05_saving.ipynb", "map_location='cpu'", "",
            "loads a checkpoint by hand onto the CPU, where a file from any machine can be read"),
    Allowed("book/07_errata.ipynb", "old='cpu'", "retag",
            "erratum 17 writes a file as a GPU machine would: it renames the storages' device tags"),
    Allowed("book/07_errata.ipynb", "new='cuda:0'", "retag", "the same renaming"),
    Allowed("book/07_errata.ipynb", "map_location='cpu'", "",
            "erratum 17's fix: a file written on a GPU machine, loaded on any machine"),
    Allowed("book/08_speed.ipynb", "torch.device('cpu')", "",
            "the Speed chapter measures the CPU itself: its timings are CPU figures on every runtime"),
    Allowed("alexnet_tutorial/checkpoint.py", "map_location='cpu'", "load_checkpoint",
            "loading onto the CPU reads a checkpoint written on any machine; callers move the model"),
    Allowed("alexnet_tutorial/checkpoint.py", "map_location='cpu'", "load_model",
            "the same for the loaded network, which the caller then moves where it trains or predicts"),
    Allowed("alexnet_tutorial/checkpoint.py", ".to('cpu')", "_on_cpu",
            "a checkpoint holds CPU copies of the weights, so that it loads on any machine"),
    Allowed("alexnet_tutorial/data.py", "device='cpu'", "mnist_tensors",
            "where the tensors go unless the caller names the run's device (build_loaders does)"),
    Allowed("alexnet_tutorial/devices.py", "torch.device('cuda')", "pick_device",
            "the one function that turns the reader's choice ('auto', 'cuda', ...) into a device"),
    Allowed("alexnet_tutorial/devices.py", "torch.device('mps')", "pick_device", "the same choice"),
    Allowed("alexnet_tutorial/devices.py", "torch.device('cpu')", "pick_device", "the same choice"),
    Allowed("alexnet_tutorial/distributed.py", "torch.device('cuda')", "setup",
            "under torchrun each process takes the GPU torchrun assigns it (LOCAL_RANK)"),
    Allowed("alexnet_tutorial/distributed.py", "= 'cpu'", "all_sum",
            "gloo sums CPU tensors; NCCL sums tensors on this process's GPU"),
    Allowed("alexnet_tutorial/distributed.py", "torch.device('cuda')", "all_sum", "the same choice"),
    Allowed("book/09_distributed.ipynb", "device='cpu'", "",
            "the chapter's run is two CPU processes (gloo), the run a reader can do on a laptop"),
    Allowed("alexnet_tutorial/images.py", ".cpu()", "predict_probabilities",
            "returns the probabilities on the CPU for printing and plotting, wherever the model ran"),
    Allowed("alexnet_tutorial/plots.py", ".cpu()", "_pixels",
            "matplotlib draws CPU arrays: the pixels come off the device to be drawn"),
    Allowed("alexnet_tutorial/plots.py", ".cpu()", "confusion_figure",
            "matplotlib draws CPU arrays: the counts come off the device to be drawn"),
    Allowed("alexnet_tutorial/plots.py", ".cpu()", "filter_change",
            "matplotlib draws CPU arrays: the filters' norms and cosines come off the device to be drawn"),
    Allowed("alexnet_tutorial/plots.py", ".cpu()", "filters_figure",
            "matplotlib draws CPU arrays: the first layer's filters come off the device to be drawn"),
    Allowed("alexnet_tutorial/model.py", ".cpu()", "feature_maps",
            "returns the feature maps on the CPU for drawing with matplotlib, wherever the model ran"),
]


@dataclass(frozen=True)
class Finding:
    line: int
    code: str   # e.g. "evaluate(…, 'cpu')", ".to('cuda')", "device='mps'", "torch.device('cpu')", ".cuda()"
    scope: str


def _is_device(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and DEVICE.fullmatch(node.value) is not None


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else "…"


def _is_torch_device(call: ast.Call) -> bool:
    return _callee(call) == "device" and (not isinstance(call.func, ast.Attribute) or
                                          isinstance(call.func.value, ast.Name) and call.func.value.id == "torch")


def _literals(node) -> list[str]:
    """The device names ``node`` evaluates to: a literal, or the branches of ``a if c else b``."""
    if _is_device(node):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    return []


def findings(source: str) -> list[Finding]:
    """Every place in ``source`` (Python code) that passes a literal device."""
    tree = ast.parse(source)
    found = []

    def visit(node, scope):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = node.name
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                found.extend(Finding(default.lineno, f"{arg.arg}={name!r}", scope) for name in _literals(default))
        elif isinstance(node, ast.Call):
            name = _callee(node)
            if isinstance(node.func, ast.Attribute) and name in MOVES:
                found.append(Finding(node.lineno, f".{name}()", scope))
            if _is_torch_device(node):
                found.extend(Finding(node.lineno, f"torch.device({n!r})", scope)
                             for arg in node.args for n in _literals(arg))
            elif name not in NAME_ONLY:
                dotted = f".{name}" if isinstance(node.func, ast.Attribute) else name
                found.extend(Finding(node.lineno, f"{dotted}({n!r})" if dotted == ".to" else f"{dotted}(…, {n!r})",
                                     scope) for arg in node.args for n in _literals(arg))
                found.extend(Finding(node.lineno, f"{kw.arg}={n!r}", scope)
                             for kw in node.keywords for n in _literals(kw.value))
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.Return)) and node.value is not None:
            found.extend(Finding(node.lineno, f"= {n!r}", scope) for n in _literals(node.value))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, "")
    return found


def code_of(path: Path) -> list[tuple[str, str]]:
    """``(where, Python source)`` for a module, or for each code cell of a notebook (magics turned into Python)."""
    if path.suffix == ".py":
        return [("", path.read_text())]
    transform = TransformerManager().transform_cell
    nb = nbformat.read(path, as_version=4)
    return [(f"cell {cell.get('id', i)}: ", transform(cell.source))
            for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def flagged(path: Path) -> tuple[list[str], set[Allowed]]:
    """The findings in ``path`` that no ``ALLOWED`` entry covers, and the entries that were used."""
    rel = path.relative_to(ROOT).as_posix()
    bad, used = [], set()
    for where, source in code_of(path):
        for f in findings(source):
            entry = next((a for a in ALLOWED if (a.file, a.code, a.scope) == (rel, f.code, f.scope)), None)
            if entry:
                used.add(entry)
            else:
                bad.append(f"{rel}: {where}line {f.line}{' in ' + f.scope if f.scope else ''}: {f.code}")
    return bad, used


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_literal_device_where_the_models_or_the_runs_belongs(path):
    bad, _ = flagged(path)
    assert not bad, ("a literal device where the model's or the run's device belongs "
                     "(use the model's own device, next(model.parameters()).device, or the run's):\n"
                     + "\n".join(bad))


def test_every_allowed_place_still_exists():
    used = set().union(*(flagged(path)[1] for path in FILES))
    stale = [a for a in ALLOWED if a not in used]
    assert not stale, f"ALLOWED names places the code no longer has; remove them: {stale}"


@pytest.mark.parametrize("source, code", [
    ("evaluate(model, loader, 'cpu')", "evaluate(…, 'cpu')"),
    ("batch.to('cuda:0')", ".to('cuda:0')"),
    ("model.to(device='mps')", "device='mps'"),
    ("TrainConfig(device='cuda')", "device='cuda'"),
    ("x = torch.device('cpu')", "torch.device('cpu')"),
    ("evaluate(model, loader, torch.device('cuda'))", "torch.device('cuda')"),
    ("model.cuda()", ".cuda()"),
    ("images.cpu().numpy()", ".cpu()"),
    ("def run(model, device='cpu'):\n    pass", "device='cpu'"),
    ("def run(*, device='mps'):\n    pass", "device='mps'"),
    ("device = 'cuda'", "= 'cuda'"),
    ("device = 'cuda' if fast else 'cpu'", "= 'cpu'"),
])
def test_the_check_finds_a_literal_device(source, code):
    assert code in [f.code for f in findings(source)]


@pytest.mark.parametrize("source", [
    "evaluate(model, loader, next(model.parameters()).device)",
    "evaluate(run.model, loader, run.device)",
    "if device.type == 'cuda':\n    torch.cuda.synchronize()",
    "state['rng']['cuda'] = torch.cuda.get_rng_state_all()",
    "if 'cuda' in state['rng']:\n    pass",
    "parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda', 'mps'))",
    "mps = getattr(torch.backends, 'mps', None)",
    "print(f'training on cpu, {n} images')",
    "log('cuda is not available; training on the cpu')",
    "TrainConfig(device='auto')",
])
def test_the_check_leaves_other_mentions_alone(source):
    assert findings(source) == []


def test_notebook_magics_do_not_stop_the_check(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%matplotlib inline\n!ls\nmodel.to('cuda')")])
    path = tmp_path / "magic.ipynb"
    nbformat.write(nb, path)
    assert [f.code for _, source in code_of(path) for f in findings(source)] == [".to('cuda')"]
