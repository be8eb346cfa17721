"""MNIST on disk and in batches: the real test split, clear errors, subsets, the tensor loader."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from alexnet_tutorial import data
from alexnet_tutorial.data import (
    DEFAULT_DATA_DIR,
    ENV_VAR,
    DataError,
    TensorLoader,
    check_files,
    mnist_dataset,
    mnist_tensors,
    resolve_data_dir,
    shift_images,
    subset_indices,
)

# The published sizes of the MNIST test split, digit by digit (LeCun et al.).
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def copy_mnist(src_root: Path, dst_root: Path, names) -> Path:
    raw = dst_root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src_root / "MNIST" / "raw" / name, raw / name)
    return raw


def no_download(monkeypatch, calls=None):
    """Make torchvision's MNIST download fail as it does offline (and count the attempts)."""

    def offline(self):
        if calls is not None:
            calls.append(self.root)
        raise RuntimeError(  # what torchvision raises with no network
            "Error downloading train-images-idx3-ubyte.gz:\n"
            "Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n"
            "<urlopen error [Errno -3] Temporary failure in name resolution>\n")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)


# --- the test split is the real one (bug 1) ---------------------------------------------

def test_test_split_is_the_real_held_out_one(data_dir):
    test = mnist_dataset(False, data_dir, download=False)
    train = mnist_dataset(True, data_dir, download=False)
    assert len(test) == 10_000 and len(train) == 60_000
    assert test.data.shape == (10_000, 28, 28) and test.data.dtype == torch.uint8
    train_hashes = {hashlib.sha1(img.tobytes()).digest() for img in train.data.numpy()}
    shared = sum(hashlib.sha1(img.tobytes()).digest() in train_hashes for img in test.data.numpy())
    assert shared == 0, f"{shared} test images also appear in the training set"


def test_test_label_counts_match_the_published_split(data_dir):
    test = mnist_dataset(False, data_dir, download=False)
    assert torch.bincount(test.targets, minlength=10).tolist() == TEST_LABEL_COUNTS


def test_normalised_training_images_have_mean_0_and_std_1(data_dir):
    images, labels = mnist_tensors(True, data_dir)
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert abs(images.mean().item()) < 1e-3
    assert abs(images.std().item() - 1) < 1e-3


def test_tensor_images_match_the_torchvision_transform(data_dir):
    images, labels = mnist_tensors(False, data_dir)
    dataset = mnist_dataset(False, data_dir, transform=data.default_transform(), download=False)
    for i in (0, 1234, 9999):
        x, y = dataset[i]
        torch.testing.assert_close(images[i], x, rtol=0, atol=1e-6)
        assert labels[i].item() == y


# --- where the data lives -----------------------------------------------------------------

def test_resolve_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_data_dir() == DEFAULT_DATA_DIR
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert resolve_data_dir() == tmp_path / "from-env"
    assert resolve_data_dir("") == tmp_path / "from-env"
    assert resolve_data_dir(tmp_path / "from-arg") == tmp_path / "from-arg"
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_data_dir() == DEFAULT_DATA_DIR
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/mnist") == tmp_path / "mnist"


def test_missing_data_without_download_names_the_root_and_the_variable(tmp_path):
    with pytest.raises(DataError) as info:
        mnist_dataset(True, tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert ENV_VAR in message and "--data-dir" in message
    assert "\n" not in message


def test_missing_data_offline_names_the_root_and_the_variable(tmp_path, monkeypatch):
    calls = []
    no_download(monkeypatch, calls)
    with pytest.raises(DataError) as info:
        mnist_dataset(False, tmp_path)
    message = str(info.value)
    assert calls, "no download was attempted"
    assert str(tmp_path / "MNIST" / "raw") in message and ENV_VAR in message
    assert "download failed" in message and "\n" not in message
    assert "Temporary failure in name resolution" in message  # the cause, not just "Error downloading"


def test_missing_data_through_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        mnist_dataset(False, None, download=False)


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_truncated_file_names_the_file(data_dir, tmp_path, name):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES + TRAIN_FILES)
    with open(raw / name, "r+b") as f:
        f.truncate((raw / name).stat().st_size // 2)
    with pytest.raises(DataError) as info:
        mnist_dataset(False, tmp_path)
    assert str(raw / name) in str(info.value) and "truncated" in str(info.value)


def test_file_of_the_right_size_but_wrong_header_names_the_file(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES)
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.write(b"\x00\x00\x08\x03")  # the images' magic number on the labels file
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        check_files(tmp_path, train=False)


def test_half_a_split_is_reported(data_dir, tmp_path):
    copy_mnist(data_dir, tmp_path, TEST_FILES[:1])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is missing"):
        mnist_dataset(False, tmp_path)


def test_a_split_whose_other_split_is_missing_is_downloaded(data_dir, tmp_path, monkeypatch):
    # An interrupted download leaves the training files without the test files. torchvision
    # needs all four files: the missing ones must be fetched, not reported as a failed download.
    copy_mnist(data_dir, tmp_path, TRAIN_FILES)
    fetched = []

    def fake_download(self):
        fetched.append(True)
        copy_mnist(data_dir, Path(self.root), TEST_FILES)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    assert len(mnist_dataset(True, tmp_path)) == 60_000
    assert fetched


def test_a_split_whose_other_split_is_missing_offline_says_so(data_dir, tmp_path):
    copy_mnist(data_dir, tmp_path, TEST_FILES)
    with pytest.raises(DataError) as info:
        mnist_dataset(False, tmp_path, download=False)
    assert "downloading is off" in str(info.value)


def test_read_only_copy_loads_and_is_not_written_to(data_dir, tmp_path):
    copy_mnist(data_dir, tmp_path, TEST_FILES + TRAIN_FILES)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for path in tmp_path.rglob("*"):
        path.chmod(0o444 if path.is_file() else 0o555)
    try:
        images, labels = mnist_tensors(False, tmp_path)
        assert images.shape == (10_000, 1, 28, 28)
        assert torch.bincount(labels, minlength=10).tolist() == TEST_LABEL_COUNTS
        assert len(mnist_dataset(True, tmp_path, download=False)) == 60_000
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
        assert not os.stat(tmp_path / "MNIST" / "raw").st_mode & stat.S_IWUSR
    finally:
        for path in tmp_path.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)


def poke(path: Path, offset: int, content: bytes) -> None:
    """Overwrite bytes of ``path`` in place: same size, one damaged spot."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(content)


# --- damaged bytes of the right size, failed downloads (issue 22: items 4, 9 and 15) --------------

@pytest.mark.parametrize("train", [False, True], ids=["test split", "training split"])
def test_a_label_byte_out_of_range_names_the_file_and_the_record(data_dir, tmp_path, train):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES + TRAIN_FILES)
    labels = raw / ("train-labels-idx1-ubyte" if train else "t10k-labels-idx1-ubyte")
    poke(labels, 8 + 1234, b"\xff")  # right size, right magic number, a label of 255
    poke(labels, 8 + 5000, b"\x0a")  # a later bad one is not the one named
    with pytest.raises(DataError) as info:
        mnist_tensors(train, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(labels) in message and "record 1,234" in message and "255" in message
    with pytest.raises(DataError, match="record 1,234"):  # the torchvision loader reads the same check
        mnist_dataset(train, tmp_path)


def test_an_images_file_of_another_shape_names_the_file_and_the_shape(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES + TRAIN_FILES)
    images = raw / "t10k-images-idx3-ubyte"
    poke(images, 8, (14).to_bytes(4, "big") + (56).to_bytes(4, "big"))  # 14x56: the same bytes, another shape
    with pytest.raises(DataError) as info:
        mnist_tensors(False, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(images) in message and "14x56" in message and "28x28" in message


def test_a_wrong_magic_number_is_named_as_such(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES)
    images = raw / "t10k-images-idx3-ubyte"
    poke(images, 0, (2049).to_bytes(4, "big"))  # the labels' magic number on the images file
    with pytest.raises(DataError) as info:
        check_files(tmp_path, train=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(images) in message and "magic number 2049, expected 2051" in message
    assert "7,840,016 bytes" not in message  # the size is right; it is not what is wrong


def test_a_wrong_item_count_is_named_as_such(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES)
    poke(raw / "t10k-labels-idx1-ubyte", 4, (9_999).to_bytes(4, "big"))
    with pytest.raises(DataError, match="counts 9,999 labels, expected 10,000"):
        check_files(tmp_path, train=False)


@pytest.fixture
def unreachable(monkeypatch):
    """torchvision's own download, with every mirror unreachable: it creates MNIST/raw first."""

    def fail(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", fail)


def test_a_failed_download_into_a_mistyped_folder_leaves_no_folder(tmp_path, unreachable):
    typo = tmp_path / "mnsit"
    with pytest.raises(DataError, match="download failed"):
        mnist_dataset(False, typo)
    assert not typo.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_keeps_the_folders_that_were_there(tmp_path, unreachable):
    (tmp_path / "data" / "MNIST").mkdir(parents=True)
    (tmp_path / "data" / "notes.txt").write_text("mine\n")
    with pytest.raises(DataError, match="download failed"):
        mnist_dataset(True, tmp_path / "data")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "data", "data/MNIST", "data/notes.txt"]


def test_a_download_interrupted_by_ctrl_c_leaves_no_folder(tmp_path, monkeypatch):
    def interrupted(url, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist_dataset(False, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_a_download_that_works_keeps_its_folders(data_dir, tmp_path, monkeypatch):
    def fetch(url, download_root, filename=None, md5=None):
        name = Path(filename).stem
        shutil.copyfile(data_dir / "MNIST" / "raw" / name, Path(download_root) / name)

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", fetch)
    assert len(mnist_dataset(False, tmp_path / "new")) == 10_000
    assert sorted(p.name for p in (tmp_path / "new" / "MNIST" / "raw").iterdir()) == sorted(TEST_FILES + TRAIN_FILES)


# --- subsets ------------------------------------------------------------------------------

def test_subset_is_the_first_n_images(data_dir, train_sample):
    images, labels = train_sample
    first, first_labels = mnist_tensors(True, data_dir, subset=20)
    assert torch.equal(first, images[:20]) and torch.equal(first_labels, labels[:20])
    assert subset_indices(labels, 7).tolist() == list(range(7))


def test_stratified_subset_has_equal_counts_and_takes_each_digits_first_images(data_dir):
    targets = mnist_dataset(True, data_dir, download=False).targets
    idx = subset_indices(targets, 25, stratified=True)
    counts = torch.bincount(targets[idx], minlength=10).tolist()
    assert counts == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 25
    for digit in range(10):
        expected = torch.nonzero(targets == digit).flatten()[:counts[digit]]
        assert torch.equal(idx[targets[idx] == digit], expected)
    idx = subset_indices(targets, 1000, stratified=True)
    assert torch.bincount(targets[idx], minlength=10).tolist() == [100] * 10


@pytest.mark.parametrize("n", [0, -1, 61])
def test_subset_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match="subset"):
        subset_indices(torch.arange(60) % 10, n)


# --- the tensor loader --------------------------------------------------------------------

def synthetic(n=50):
    images = torch.rand(n, 1, 28, 28) - 0.5
    images[:, :, :4] = images.min()  # a flat top border, like MNIST's black margin
    return images, torch.arange(n)


def epoch_labels(loader, epoch, start_step=0):
    loader.set_epoch(epoch, start_step)
    return [y.tolist() for _x, y in loader]


def test_loader_visits_every_image_once_per_epoch_in_batches():
    images, labels = synthetic(50)
    loader = TensorLoader(images, labels, batch_size=16, shuffle=True, seed=3)
    assert len(loader) == 4 and len(loader.dataset) == 50
    batches = epoch_labels(loader, 0)
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    assert sorted(sum(batches, [])) == list(range(50))
    assert sum(epoch_labels(TensorLoader(images, labels, 16), 0), []) == list(range(50))


def test_loader_order_is_a_function_of_seed_and_epoch():
    images, labels = synthetic(50)
    a = TensorLoader(images, labels, batch_size=16, shuffle=True, seed=3, shift=2)
    b = TensorLoader(images, labels, batch_size=16, shuffle=True, seed=3, shift=2)
    assert epoch_labels(a, 1) == epoch_labels(b, 1)
    assert epoch_labels(a, 1) != epoch_labels(a, 2)
    c = TensorLoader(images, labels, batch_size=16, shuffle=True, seed=4, shift=2)
    assert epoch_labels(a, 1) != epoch_labels(c, 1)
    a.set_epoch(5)
    b.set_epoch(5)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_set_epoch_with_start_step_replays_exactly_the_tail_of_the_epoch():
    images, labels = synthetic(50)
    loader = TensorLoader(images, labels, batch_size=8, shuffle=True, seed=1, shift=3)
    loader.set_epoch(2)
    full = list(loader)
    loader.set_epoch(2, 4)
    tail = list(loader)
    assert len(tail) == len(full) - 4
    for (xf, yf), (xt, yt) in zip(full[4:], tail):
        assert torch.equal(xf, xt) and torch.equal(yf, yt)
    assert len(list(loader)) == len(full)  # the next pass starts from step 0 again


def test_shifts_keep_shape_and_values_in_range():
    images, labels = synthetic(40)
    loader = TensorLoader(images, labels, batch_size=40, shuffle=False, seed=0, shift=2)
    (x, y), = list(loader)
    assert x.shape == images.shape and x.dtype == images.dtype
    assert x.min() >= images.min() and x.max() <= images.max()
    assert not torch.equal(x, images)


def test_shift_images_moves_a_pixel_by_the_requested_offset():
    x = torch.zeros(3, 1, 28, 28)
    x[:, 0, 10, 12] = 1.0
    shifts = torch.tensor([[0, 0], [2, -1], [-2, 2]])
    out = shift_images(x, shifts, pad=2, fill=-0.5)
    assert out.shape == x.shape
    for image, (dy, dx) in zip(out, shifts.tolist()):
        expected = torch.full((28, 28), -0.5) if (dy, dx) != (0, 0) else torch.zeros(28, 28)
        if (dy, dx) != (0, 0):
            expected[max(0, dy):28 + min(0, dy), max(0, dx):28 + min(0, dx)] = 0.0
        expected[10 + dy, 12 + dx] = 1.0
        assert torch.equal(image[0], expected), (dy, dx)


def test_loader_refuses_mismatched_lengths():
    with pytest.raises(ValueError):
        TensorLoader(torch.zeros(3, 1, 28, 28), torch.zeros(2), batch_size=2)


def test_torchvision_loaders_are_seeded_and_hold_the_real_test_split(data_dir):
    train_a, test_a = data.make_loaders(batch_size=32, data_dir=data_dir, subset=128, seed=7)
    train_b, _ = data.make_loaders(batch_size=32, data_dir=data_dir, subset=128, seed=7)
    assert len(train_a.dataset) == 128 and len(test_a.dataset) == 10_000
    (_, ya), (_, yb) = next(iter(train_a)), next(iter(train_b))
    assert torch.equal(ya, yb)


def test_torchvision_loader_shifts_training_images_only(data_dir):
    """``shift`` works with the per-item loader too: training batches move, test batches do not."""
    plain, test_plain = data.make_loaders(batch_size=64, data_dir=data_dir, subset=64, seed=3)
    shifted, test_shifted = data.make_loaders(batch_size=64, data_dir=data_dir, subset=64, seed=3, shift=2)
    torch.manual_seed(0)
    x_plain, y_plain = next(iter(plain))
    torch.manual_seed(0)
    x_shift, y_shift = next(iter(shifted))
    assert torch.equal(y_plain, y_shift)  # same order: the shuffle follows the loader's own generator
    assert x_shift.shape == x_plain.shape
    assert not torch.equal(x_plain, x_shift)
    assert torch.equal(next(iter(test_plain))[0], next(iter(test_shifted))[0])
