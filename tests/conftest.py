"""Fixtures shared by every test file: the book's tokenizer and MiniMind2's released tokenizer."""
import os
from pathlib import Path

import pytest

from minimind.paths import REPO_ROOT

# MiniMind2's real tokenizer files live beside the repository in the project's shared reference
# folder (CI has it; a reader's clone may not). MINIMIND2_TOKENIZER points elsewhere.
MINIMIND2_TOKENIZER_DIR = Path(os.environ.get(
    "MINIMIND2_TOKENIZER",
    (REPO_ROOT or Path(__file__).resolve().parents[1]).parent / "shared" / "reference" / "minimind2_tokenizer",
))


@pytest.fixture(scope="session")
def book_tokenizer():
    """The chapters' tokenizer: byte-level BPE asked for 2048 tokens, trained on the synthetic
    pretraining corpus (about 2 s)."""
    from minimind.data.jsonl import read_jsonl
    from minimind.data.synthetic import dataset_path
    from minimind.tokenizer import train_tokenizer

    texts = (row["text"] for row in read_jsonl(dataset_path("pretrain"), schema="pretrain"))
    return train_tokenizer(texts, vocab_size=2048)


@pytest.fixture(scope="session")
def minimind2_tokenizer_dir():
    """Directory of MiniMind2's released tokenizer.json + tokenizer_config.json (skips if absent)."""
    if not (MINIMIND2_TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.skip(f"MiniMind2 tokenizer not found at {MINIMIND2_TOKENIZER_DIR} (set MINIMIND2_TOKENIZER)")
    return MINIMIND2_TOKENIZER_DIR
