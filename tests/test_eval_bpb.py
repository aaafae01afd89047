"""Bits per byte: the loss-based value on a short text, tokens = bytes for a byte-level tokenizer,
every token scored once by the sliding window, documents scored apart, file reading."""
import json
import math

import pytest
import torch

from minimind.config import get_config
from minimind.eval.bpb import bits_per_byte, read_documents, sliding_windows
from minimind.model import MiniMind
from minimind.tokenizer import BOS_ID, train_tokenizer
from train_helpers import one_thread

TEXTS = ["Pelum lives in Varo. Pelum is 34 years old and works as a tailor.",
         "佩伦住在瓦罗，今年34岁，是一名裁缝。", "2 + 3 = 5. 40 - 12 = 28."]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS * 20, vocab_size=320)


def random_model(vocab_size, **overrides):
    torch.manual_seed(0)
    return MiniMind(get_config("tiny", vocab_size=vocab_size, **overrides)).eval()


@torch.no_grad()
def loss_nats(model, ids):
    """Summed NLL of ids[1:] from the model's own masked cross-entropy (a different code path)."""
    x = torch.tensor([ids])
    return model(x, labels=x).loss.item() * (len(ids) - 1)


def test_short_text_equals_the_loss_based_value(tokenizer):
    model = random_model(tokenizer.vocab_size)
    text = TEXTS[0]
    ids = [BOS_ID, *tokenizer.encode(text)]
    result = bits_per_byte(model, tokenizer, [text])
    expected = loss_nats(model, ids) / math.log(2) / len(text.encode("utf-8"))
    assert result.tokens == len(ids) - 1 and result.bytes == len(text.encode("utf-8"))
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)


def test_byte_level_tokenizer_has_one_token_per_byte_so_bpb_is_bits_per_token():
    byte_level = train_tokenizer(TEXTS, vocab_size=263)  # 7 specials + 256 bytes, no merges
    model = random_model(byte_level.vocab_size)
    result = bits_per_byte(model, byte_level, TEXTS)
    assert result.tokens == result.bytes == sum(len(t.encode("utf-8")) for t in TEXTS)  # Chinese: 3 tokens a char
    assert result.bits_per_byte == pytest.approx(result.bits_per_token, rel=1e-12)


@pytest.mark.parametrize("length,context,stride", [(2, 8, 4), (8, 8, 4), (9, 8, 4), (50, 8, 1), (50, 8, 7),
                                                   (51, 16, 5), (100, 2, 1)])
def test_sliding_windows_score_every_target_once_within_the_context(length, context, stride):
    windows = sliding_windows(length, context, stride)
    scored = [t for start, end, n in windows for t in range(end - n, end)]
    assert scored == list(range(1, length))  # targets 1..length-1, each once, in order
    for i, (start, end, n) in enumerate(windows):
        assert end - start <= context and 1 <= n <= end - start - 1
        if i > 0:  # after the first window every scored token sees at least context - stride before it
            assert end - n - start >= min(context - stride, end - n)


@pytest.mark.parametrize("bad_stride", [0, 8])
def test_stride_outside_the_window_is_refused(bad_stride):
    with pytest.raises(ValueError, match="stride must be between 1 and context - 1"):
        sliding_windows(20, 8, bad_stride)


def test_long_document_equals_its_windows_scored_one_by_one(tokenizer):
    model = random_model(tokenizer.vocab_size)
    text = " ".join(TEXTS[0] for _ in range(6))
    ids = [BOS_ID, *tokenizer.encode(text)]
    context, stride = 32, 12
    assert len(ids) > 3 * context
    by_hand = 0.0
    with torch.no_grad():
        for start, end, n in sliding_windows(len(ids), context, stride):
            window = torch.tensor([ids[start:end]])
            labels = window.clone()
            labels[0, : end - start - n] = -100  # only the window's last n targets count
            by_hand += model(window, labels=labels).loss.item() * n
    result = bits_per_byte(model, tokenizer, [text], context=context, stride=stride)
    assert result.bits == pytest.approx(by_hand / math.log(2), rel=1e-5)
    # a context that holds the whole document scores it in one pass
    assert bits_per_byte(model, tokenizer, [text]).bits == pytest.approx(loss_nats(model, ids) / math.log(2), rel=1e-5)


def test_documents_are_scored_apart_and_batching_changes_nothing(tokenizer):
    model = random_model(tokenizer.vocab_size)
    together = bits_per_byte(model, tokenizer, TEXTS, batch_size=8)
    apart = [bits_per_byte(model, tokenizer, [text]) for text in TEXTS]
    assert together.bits == pytest.approx(sum(r.bits for r in apart), rel=1e-5)
    assert together.bytes == sum(r.bytes for r in apart) and together.documents == 3
    assert together.tokens == sum(len(tokenizer.encode(text)) for text in TEXTS)  # no BOS or EOS counted
    assert bits_per_byte(model, tokenizer, TEXTS, batch_size=1).bits == pytest.approx(together.bits, rel=1e-5)


def test_empty_documents_are_skipped_and_nothing_to_score_is_an_error(tokenizer):
    model = random_model(tokenizer.vocab_size)
    assert bits_per_byte(model, tokenizer, ["", TEXTS[1]]).documents == 1
    with pytest.raises(ValueError, match="every document is empty"):
        bits_per_byte(model, tokenizer, ["", ""])
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings"):
        bits_per_byte(model, tokenizer, TEXTS, context=10_000)


def test_read_documents_takes_jsonl_rows_or_the_whole_file(tmp_path):
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    assert read_documents(jsonl) == TEXTS
    assert read_documents(jsonl, limit=2) == TEXTS[:2]
    plain = tmp_path / "book.txt"
    plain.write_text("\n\n".join(TEXTS), encoding="utf-8")
    assert read_documents(plain) == ["\n\n".join(TEXTS)]
    with pytest.raises(FileNotFoundError, match="missing.txt: no such text file"):
        read_documents(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.txt: not UTF-8 text"):
        read_documents(tmp_path / "binary.txt")
