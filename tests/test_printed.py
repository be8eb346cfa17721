"""benchmarks/printed.py: the printed-digit set and the script that reads it with checkpoints."""

import importlib.util
import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def printed():
    spec = importlib.util.spec_from_file_location("printed", ROOT / "benchmarks" / "printed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def items(printed):
    return printed.printed_set()


def test_the_set_has_every_digit_in_every_font_and_variant(printed, items):
    assert len(items) == 16 * 10 * 2 * 2 * 2
    assert Counter(i["label"] for i in items) == {d: 128 for d in range(10)}
    assert Counter(i["font"] for i in items) == {f: 80 for f in printed.FONTS}
    for item in items:
        assert item["tensor"].shape == (1, 1, 28, 28)
        page = item["page"]  # the ink is where the polarity says: the border is paper
        border = np.concatenate([page[0], page[-1]])
        assert border.mean() > 0.9 if item["polarity"] == "dark on light" else border.mean() < 0.1


def test_position_and_polarity_on_the_page_do_not_change_the_prepared_digit(items):
    """prepare crops to the ink and inverts light paper, so the four pages of one glyph (two
    positions x two polarities) give one and the same MNIST-style digit, centred like MNIST's."""
    same = defaultdict(list)
    for item in items:
        same[(item["font"], item["size"], item["label"])].append(item["digit"])
    assert len(same) == 320
    for digits in same.values():
        assert len(digits) == 4
        for d in digits[1:]:
            np.testing.assert_array_equal(d, digits[0])
        ys, xs = np.indices(digits[0].shape)
        mass = digits[0].sum()
        assert abs((ys * digits[0]).sum() / mass - 14) <= 0.5 and abs((xs * digits[0]).sum() / mass - 14) <= 0.5


def test_read_printed_counts_hits_per_font_and_names_the_misreadings(printed, items):
    import torch

    class AlwaysSeven(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))  # predict_probabilities asks for its device

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 7), 10).float()

    result = printed.read_printed(AlwaysSeven(), items)
    assert result["accuracy"] == pytest.approx(0.1) and result["count"] == 1280
    assert all(v == pytest.approx(0.1) for v in result["by_font"].values())
    assert result["misses"]["3 read as 7"] == 128 and "7 read as 7" not in result["misses"]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "printed.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_script_compares_checkpoints_beside_their_mnist_accuracy(tmp_path, data_dir, seeded_model,
                                                                 make_checkpoint):
    first = make_checkpoint(seeded_model(0), tmp_path / "a.pt")
    out = tmp_path / "printed.json"
    done = run(str(first), "--data-dir", str(data_dir), "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "printed digits, % right" in done.stdout and "MNIST test (10,000)" in done.stdout
    [result] = json.loads(out.read_text())["results"]
    assert result["count"] == 1280 and 0 <= result["accuracy"] <= 1
    assert 0 <= result["mnist_test_accuracy"] <= 1 and set(result["by_font"]) >= {"STIX", "DejaVu Sans"}
    # An untrained network is near chance on both (its guesses are mostly one class).
    assert result["mnist_test_accuracy"] < 0.3 and result["accuracy"] < 0.3


def test_script_refuses_a_damaged_checkpoint_in_one_line(tmp_path, data_dir):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    done = run(str(bad), "--data-dir", str(data_dir))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "bad.pt" in done.stderr
    assert bad.read_bytes() == b"not a checkpoint"


def test_a_matplotlib_without_the_fonts_gets_a_one_line_error(printed, tmp_path, monkeypatch, capsys):
    (tmp_path / "DejaVuSans.ttf").write_bytes(b"")  # one font there, the other 15 not
    monkeypatch.setattr(printed, "font_dir", lambda: tmp_path)
    assert printed.main(["--save-grid", str(tmp_path / "grid.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: matplotlib ") and "cmti10.ttf" in err and "DejaVuSans.ttf," not in err
    assert "\n" not in err and not (tmp_path / "grid.png").exists()
    assert torch.is_grad_enabled()  # main leaves the process as it found it (other tests train in it)
