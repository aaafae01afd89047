"""Atomic file writes, shared by everything that saves (weights, tokenizers, data, reports).

Torch-free on purpose: the data tools stream multi-GB corpora under a memory bound and must
not pay for importing torch.
"""
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

# the names atomic_output gives its temporary files: ".<target name>.<8 random characters>.tmp"
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an exception the file
    written there is renamed over `path` (with the mode an ordinary open() gives), otherwise it is
    removed: a reader sees either the old file or the complete new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(temp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        failure = _write_failure(path, error)
        if failure is not None:
            raise failure from error
        raise


def _write_failure(path: Path, error: BaseException):
    """An OSError naming `path` when `error` comes from the file system (disk full, file too
    large, no permission), else None. Libraries wrap such errors: torch.save in a RuntimeError
    whose context is the OSError of the file object it wrote to, and Rust libraries (safetensors,
    tokenizers) in a message ending in "(os error N)"."""
    cause = error
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno is not None:
        code, reason = cause.errno, cause.strerror or str(cause)
    else:
        match = re.search(r"\(os error (\d+)\)", str(error))
        if match is None:
            return None
        code, reason = int(match.group(1)), os.strerror(int(match.group(1)))
    failure = OSError(f"{path}: cannot write it ({reason})")
    failure.errno = code
    return failure


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


def remove_temp_files(directory) -> None:
    """Delete the temporary files that writes into `directory` left when their process was
    killed mid-write (a finished or failed write removes its own)."""
    for path in Path(directory).iterdir():
        if path.is_file() and TEMP_NAME.match(path.name):
            path.unlink(missing_ok=True)
