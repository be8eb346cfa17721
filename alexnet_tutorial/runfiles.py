"""The files a run owns: its checkpoint, the best epoch's beside it, and a lock (chapter
"Saving and loading").

A run claims its output before it trains (:func:`claim`): the path must be a file it can
write, no other live run may hold it, and a file of another run is not overwritten without
``force``. Checkpoints are written ``.best`` first, then the main file, each atomically and
with Ctrl-C held back until the file is whole (:func:`write_run`). Any state a kill can leave
resumes: a ``.best`` file without its main file is a complete checkpoint of that epoch's end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import tempfile
import threading
from pathlib import Path

from . import checkpoint as ckpt
from . import distributed
from .errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a lock file is still written, not enforced
    fcntl = None


class OutputError(UserError):
    """The output path cannot take this run's checkpoint, or another run owns it."""


def real_path(path) -> Path:
    """``path`` with symbolic links followed, so that a link's target is what gets written."""
    return Path(os.path.realpath(path))


def lock_path(path) -> Path:
    return Path(path).with_name(f".{Path(path).name}.lock")


def check_target(path) -> None:
    """Everything about ``path`` that can fail a write, checked before training: a folder that
    exists and takes new files (a temporary file is made there and removed), and ``path``
    itself, when it exists, a regular file."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write the checkpoint to {path}: it is a folder; give a file name, "
                          f"such as {path / 'alexnet.pt'}")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write the checkpoint to {path}: it is not a regular file")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc} in {folder}") from None


def remove_orphans(path) -> list[Path]:
    """Delete the temporary files a killed write of ``path`` or its ``.best`` left behind
    (call only while holding the lock); returns what it removed."""
    removed = []
    for target in (Path(path), ckpt.best_path(path)):
        for tmp in target.parent.glob(f".{target.name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _owner(lock: Path) -> str:
    with contextlib.suppress(OSError):
        return lock.read_text().strip() or "unknown"
    return "unknown"


@contextlib.contextmanager
def hold_lock(path, run_id: str = ""):
    """Hold ``path``'s lock file while the block runs; a second run aimed at the same path is
    refused in one line naming the first. The kernel drops the lock when its process dies, so
    a lock file left by a killed run is taken over, never trusted."""
    lock = lock_path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{path} is being written by another run ({_owner(lock)}); wait for it to finish, "
                              "or choose another --out") from None
        if os.path.exists(lock) and os.fstat(fd).st_ino == os.stat(lock).st_ino:
            break  # the file we locked is still the lock file (not one its last owner just removed)
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, run {run_id or 'new'}\n".encode())
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def check_existing(out: Path, resume, force: bool) -> None:
    """Refuse to start over files that hold another run's work, saying exactly what to type."""
    if force:
        return
    best = ckpt.best_path(out)
    resuming_here = resume is not None and real_path(resume) in (real_path(out), real_path(best))
    if resuming_here:
        return
    if out.exists():
        raise OutputError(f"{out} exists; continue that run with --resume {out}, overwrite it with --force, "
                          "or choose another --out")
    if best.exists():
        raise OutputError(f"{best} exists without {out} (a run stopped while writing); continue it with "
                          f"--resume {out}, overwrite it with --force, or choose another --out")


@contextlib.contextmanager
def claim(out, state: dict | None, resume, force: bool):
    """Own ``out`` (a symlink's target) for the block: checked writable, not another run's
    (unless ``force``), locked against a second run, cleared of orphan temporary files."""
    if out is None or not distributed.is_main():
        yield
        return
    out = real_path(out)
    check_target(out)
    run_id = state.get("run_id") if state else None
    with hold_lock(out, run_id or ""):
        check_existing(out, resume, force)
        remove_orphans(out)
        yield


def load_for_resume(path) -> dict:
    """The checkpoint to resume from ``path``; when only its ``.best`` file is there (a run
    killed between the two writes), that one: it is a complete checkpoint of its epoch's end."""
    path = Path(path)
    best = ckpt.best_path(path)
    if not path.exists() and best.is_file():
        return ckpt.load_checkpoint(best)
    return ckpt.load_checkpoint(path)


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C during the block is held back until it ends, then raised: a checkpoint being
    written is finished, never left half-written nor broken by the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def write_run(state: dict, path, is_best: bool) -> None:
    """Write a run's checkpoint to ``path`` (a symlink's target); when it is the best epoch so
    far, to its ``.best`` file first, so that a kill between the two writes loses nothing."""
    path = real_path(path)
    targets = [ckpt.best_path(path), path] if is_best else [path]
    with interrupts_held():
        for target in targets:
            try:
                ckpt.save_checkpoint(state, target)
            except OSError as exc:
                raise OutputError(f"cannot write {target}: {exc.strerror or exc}; the previous checkpoint is "
                                  "unchanged") from None


def restore_best(state: dict, run, resume_path, checkpoint_path, log) -> dict | None:
    """The best epoch's weights for a resumed run; its epoch and accuracy stay on record even
    when the weights are nowhere to be had. When the run goes on into another file, that
    file's .best is written at once (and so is a missing or stale one beside the resumed file),
    so that every later checkpoint of the run can count on it."""
    found = ckpt.find_best(state, resume_path)
    if found is None:
        if run.best_epoch:
            where = ckpt.best_path(resume_path) if resume_path is not None else "a .best file"
            log(f"note: the weights of the best epoch so far (epoch {run.best_epoch}, "
                f"{100 * run.best_accuracy:.2f}%) are not in {where} (missing, or from another run); the epoch "
                "stays the best on record, and a .best file is written only when a later epoch beats it")
        return None
    if checkpoint_path is not None and distributed.is_main():
        target = ckpt.best_path(real_path(checkpoint_path))
        there = None
        if target.exists():
            with contextlib.suppress(ckpt.CheckpointError):  # a damaged .best is as good as none
                there = ckpt.load_checkpoint(target)
        if there is None or (there.get("run_id"), there["epoch"]) != (found.get("run_id"), found["epoch"]):
            if there is not None:
                log(f"note: {target} held epoch {there['epoch']} of another run; it now holds this run's best "
                    f"epoch ({found['epoch']})")
            write_run(found, target, is_best=False)  # the .best file this run's checkpoint counts on
    return ckpt.model_weights(found)
