"""Atomic file writes, shared by everything that saves (weights, tokenizers, data, reports).

Torch-free on purpose: the data tools stream multi-GB corpora under a memory bound and must
not pay for importing torch.
"""
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an exception the file
    written there is renamed over `path` (with the mode an ordinary open() gives), otherwise it is
    removed: a reader sees either the old file or the complete new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(temp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write(path, write_fn: Callable[[str], None]) -> Path:
    """Call `write_fn(temp_path)` to write a temporary file beside `path`, then rename it over
    `path` (see `atomic_output`)."""
    with atomic_output(path) as temp:
        write_fn(str(temp))
    return Path(path)


def atomic_save_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""

    def write(temp):
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)
