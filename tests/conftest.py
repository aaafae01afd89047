"""Fixtures shared by every test file: the book's tokenizer and MiniMind2's released tokenizer."""
import os
from pathlib import Path

import pytest

from minimind.paths import REPO_ROOT


def pytest_configure(config):
    """Unit tests compute on the threads `make test` gives each worker (MINIMIND_THREADS=1: one
    pytest worker per core). Without this torch starts every core in each worker, and two workers
    oversubscribe the two cores of a CI machine: a test that trains took several times longer."""
    threads = int(os.environ.get("MINIMIND_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)

# MiniMind2's real tokenizer files live beside the repository in the project's shared reference
# folder (CI has it; a reader's clone may not). MINIMIND2_TOKENIZER points elsewhere.
MINIMIND2_TOKENIZER_DIR = Path(os.environ.get(
    "MINIMIND2_TOKENIZER",
    (REPO_ROOT or Path(__file__).resolve().parents[1]).parent / "shared" / "reference" / "minimind2_tokenizer",
))


@pytest.fixture(scope="session")
def book_tokenizer():
    """The chapters' tokenizer: byte-level BPE asked for 2048 tokens, trained on the book's
    synthetic training text (about 2 s)."""
    from minimind.train.tokenizer import book_tokenizer

    return book_tokenizer()


@pytest.fixture(scope="session")
def minimind2_tokenizer_dir():
    """Directory of MiniMind2's released tokenizer.json + tokenizer_config.json (skips if absent)."""
    if not (MINIMIND2_TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.skip(f"MiniMind2 tokenizer not found at {MINIMIND2_TOKENIZER_DIR} (set MINIMIND2_TOKENIZER)")
    return MINIMIND2_TOKENIZER_DIR
