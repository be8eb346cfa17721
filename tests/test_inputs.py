"""Damaged and odd inputs: each refused in one line that names the file and says what is wrong
(MNIST files, checkpoints, images), and nothing left behind by a failed download."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.error import URLError

import pytest
import torchvision

from alexnet_tutorial.data import DataError, check_files, mnist_dataset, mnist_tensors

TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ALL_FILES = (*TEST_FILES, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")


def copy_mnist(src_root: Path, dst_root: Path, names=ALL_FILES) -> Path:
    raw = dst_root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src_root / "MNIST" / "raw" / name, raw / name)
    return raw


def poke(path: Path, offset: int, content: bytes) -> None:
    """Overwrite bytes of ``path`` in place: same size, one damaged spot."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(content)


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and "\n" not in message, message
    return message


# --- MNIST files (items 4 and 9) ------------------------------------------------------------

@pytest.mark.parametrize("train", [False, True], ids=["test split", "training split"])
def test_a_label_byte_out_of_range_names_the_file_and_the_record(data_dir, tmp_path, train):
    raw = copy_mnist(data_dir, tmp_path)
    labels = raw / ("train-labels-idx1-ubyte" if train else "t10k-labels-idx1-ubyte")
    poke(labels, 8 + 1234, b"\xff")  # right size, right magic number, a label of 255
    poke(labels, 8 + 5000, b"\x0a")  # a later bad one is not the one named
    with pytest.raises(DataError) as info:
        mnist_tensors(train, tmp_path)
    message = one_line(info.value)
    assert str(labels) in message and "record 1,234" in message and "255" in message
    with pytest.raises(DataError, match="record 1,234"):  # the torchvision loader reads the same check
        mnist_dataset(train, tmp_path)


def test_the_label_check_is_cheap(data_dir):
    from alexnet_tutorial.data import check_labels

    labels = mnist_dataset(True, data_dir, download=False).targets
    started = time.perf_counter()
    for _ in range(10):
        check_labels(labels, "train-labels-idx1-ubyte")
    assert (time.perf_counter() - started) / 10 < 0.05  # vectorised: about a millisecond for 60,000


def test_an_images_file_of_another_shape_names_the_file_and_the_shape(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path)
    images = raw / "t10k-images-idx3-ubyte"
    poke(images, 8, (14).to_bytes(4, "big") + (56).to_bytes(4, "big"))  # 14x56: the same bytes, another shape
    with pytest.raises(DataError) as info:
        mnist_tensors(False, tmp_path)
    message = one_line(info.value)
    assert str(images) in message and "14x56" in message and "28x28" in message


def test_a_wrong_magic_number_is_named_as_such(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES)
    images = raw / "t10k-images-idx3-ubyte"
    poke(images, 0, (2049).to_bytes(4, "big"))  # the labels' magic number on the images file
    with pytest.raises(DataError) as info:
        check_files(tmp_path, train=False)
    message = one_line(info.value)
    assert str(images) in message and "magic number 2049, expected 2051" in message
    assert "7,840,016 bytes" not in message  # the size is right; it is not what is wrong


def test_a_wrong_item_count_is_named_as_such(data_dir, tmp_path):
    raw = copy_mnist(data_dir, tmp_path, TEST_FILES)
    poke(raw / "t10k-labels-idx1-ubyte", 4, (9_999).to_bytes(4, "big"))
    with pytest.raises(DataError, match="counts 9,999 labels, expected 10,000"):
        check_files(tmp_path, train=False)


# --- a failed download (item 15) ------------------------------------------------------------

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
    assert sorted(p.name for p in (tmp_path / "new" / "MNIST" / "raw").iterdir()) == sorted(ALL_FILES)

