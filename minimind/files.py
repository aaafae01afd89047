"""Atomic file writes, shared by everything that saves (weights, tokenizers, data, reports).

Torch-free on purpose: the data tools stream multi-GB corpora under a memory bound and must
not pay for importing torch.
"""
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path, write_fn: Callable[[str], None]) -> Path:
    """Call `write_fn(temp_path)` to write a temporary file beside `path`, then rename it over
    `path`: a reader sees either the old file or the complete new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(temp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""

    def write(temp):
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)
