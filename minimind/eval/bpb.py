"""Bits per byte: how many bits a model needs, on average, to encode each byte of a text.

    bpb = (sum over the text's tokens of -ln p(token | the tokens before it)) / ln 2 / (UTF-8 bytes)

Loss per token depends on the tokenizer (a tokenizer with longer tokens has fewer, harder
predictions), so two models with different vocabularies cannot be compared by it; bytes are the
same for every tokenizer, so bits per byte can. Each document is scored on its own, conditioned
on `<|im_start|>` as in pretraining (`PretrainDataset` starts every document with it); no end
token is scored, so the figure counts the text's tokens only. A document longer than the context
is scored with a sliding window: each window of `context` tokens scores only the tokens the
previous one did not reach, so every token is predicted exactly once and, after the first
window, with at least `context - stride` tokens before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from minimind.tokenizer import BOS_ID, PAD_ID


@dataclass(frozen=True)
class BitsPerByte:
    """Totals over the scored documents: negative log-likelihood in bits, UTF-8 bytes, tokens."""

    bits: float
    bytes: int
    tokens: int
    documents: int

    @property
    def bits_per_byte(self) -> float:
        return self.bits / self.bytes

    @property
    def bits_per_token(self) -> float:
        return self.bits / self.tokens

    def to_dict(self) -> dict:
        return {"bits_per_byte": self.bits_per_byte, "bits_per_token": self.bits_per_token, "bits": self.bits,
                "bytes": self.bytes, "tokens": self.tokens, "documents": self.documents}


def sliding_windows(length: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over a sequence of `length` ids whose targets are ids 1..length-1: a list of
    (start, end, scored), the window being ids[start:end] and its last `scored` targets the ones
    it scores. Together the windows score every target once."""
    if context < 2:
        raise ValueError(f"the context must hold at least 2 tokens, got {context}")
    if not 1 <= stride <= context - 1:
        raise ValueError(f"stride must be between 1 and context - 1 = {context - 1}, got {stride}")
    end = min(context, length)
    windows = [(0, end, end - 1)]
    while end < length:
        new_end = min(end + stride, length)
        windows.append((max(0, new_end - context), new_end, new_end - end))
        end = new_end
    return windows


@torch.inference_mode()
def _window_nlls(model, windows: list[tuple[list[int], int]], batch_size: int) -> list[float]:
    """Summed negative log-likelihood (nats, computed in fp32) of the last `scored` targets of each
    window (ids, scored), batched longest first with right padding (causal: padding at the end
    changes nothing before it)."""
    device = next(model.parameters()).device
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
    nlls = [0.0] * len(windows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = len(windows[chunk[0]][0])
        input_ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
        scored_at = torch.zeros((len(chunk), width), dtype=torch.bool)
        targets = []
        for row, i in enumerate(chunk):
            ids, scored = windows[i]
            input_ids[row, :len(ids)] = torch.tensor(ids)
            scored_at[row, len(ids) - 1 - scored:len(ids) - 1] = True  # the logits that predict the scored ids
            targets += ids[len(ids) - scored:]
        logits = model(input_ids.to(device), logits_at=scored_at.to(device)).logits  # (scored tokens, vocab)
        logprobs = logits.float().log_softmax(dim=-1)
        token_nll = -logprobs.gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1)
        for i, part in zip(chunk, token_nll.split([windows[i][1] for i in chunk])):
            nlls[i] = float(part.double().sum())
    return nlls


def bits_per_byte(model, tokenizer, documents: Sequence[str], context: Optional[int] = None,
                  stride: Optional[int] = None, batch_size: int = 8) -> BitsPerByte:
    """Bits per byte of `documents` (each scored on its own) under `model`.

    context: tokens per window, the model's `max_position_embeddings` by default; stride: new
    tokens scored per further window, half the context by default (each scored token then sees
    at least half a context before it). Empty documents are skipped.
    """
    context = context or model.config.max_position_embeddings
    if context > model.config.max_position_embeddings:
        raise ValueError(f"context {context} exceeds the model's max_position_embeddings "
                         f"{model.config.max_position_embeddings}")
    stride = stride or context // 2
    was_training = model.training
    model.eval()
    windows, total_bytes, total_tokens, scored_documents = [], 0, 0, 0
    for text in documents:
        if not text:
            continue
        ids = [BOS_ID, *tokenizer.encode(text)]
        for start, end, scored in sliding_windows(len(ids), context, stride):
            windows.append((ids[start:end], scored))
        total_bytes += len(text.encode("utf-8"))
        total_tokens += len(ids) - 1
        scored_documents += 1
    if scored_documents == 0:
        raise ValueError("no text to score: every document is empty")
    try:
        nats = sum(_window_nlls(model, windows, batch_size))
    finally:
        model.train(was_training)
    return BitsPerByte(bits=nats / math.log(2), bytes=total_bytes, tokens=total_tokens, documents=scored_documents)


def read_documents(path, limit: Optional[int] = None) -> list[str]:
    """The documents of a text file: one per row of a `.jsonl` file (its "text" field, the
    pretraining schema), or the whole file for any other suffix. `limit` keeps the first N."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file")
    if path.suffix == ".jsonl":
        from minimind.data.jsonl import read_jsonl

        documents = []
        for row in read_jsonl(path, schema="pretrain"):
            documents.append(row["text"])
            if limit is not None and len(documents) >= limit:
                break
        return documents
    try:
        return [path.read_text(encoding="utf-8")]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from None
