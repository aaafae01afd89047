"""Token datasets for every training stage, and the collate functions that batch them.

Every example is a dict of 1-D LongTensors; collate functions right-pad a batch to its longest
example. Labels are *unshifted* (``labels[t]`` is the target predicted from position ``t-1``,
the model shifts) and ``IGNORE_INDEX`` (-100) marks positions that are not supervised. Right padding needs no
attention mask: under the causal mask a real token never attends to a later pad.

- :class:`PretrainDataset` — ``{"text"}`` rows as ``[bos] + text + [eos]``, either *packed*
  (the default: documents concatenated and cut into equal chunks, every position trained) or
  *padded* (one document per example, as upstream; the padding is wasted compute).
- :class:`SFTDataset` — ``{"conversations"}`` rows rendered with the chat template; the loss
  mask comes from :meth:`MiniMindTokenizer.render_conversation`, so only assistant replies (and
  their closing ``<|im_end|>\\n``) are supervised, in every turn of a multi-turn conversation.
- :class:`DPODataset` — ``{"chosen", "rejected"}`` rows, each checked to be a usable pair (one
  prompt, two different replies; errors name the file and line); fields documented on the class.
"""
from __future__ import annotations

from array import array
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from minimind.data.jsonl import DataError, JsonlReport, check_preference_pair, read_jsonl
from minimind.losses import IGNORE_INDEX
from minimind.tokenizer import BOS_ID, EOS_ID, PAD_ID

ENCODE_CHUNK = 1024  # documents per encode_batch call: parallel in Rust, bounded in memory
ENCODE_CHUNK_CHARS = 1 << 20  # and characters per call; a longer document is encoded in windows alone
REFERENCE_KEYS = ("reference_chosen_logps", "reference_rejected_logps")  # DPO's precomputed reference log-probs


class PretrainDataset(Dataset):
    """Pretraining text as fixed-length token chunks (packing) or one padded document each.

    packing=True: every document becomes ``[bos] + ids + [eos]``, the documents are concatenated
    in file order and cut into ``len(stream) // max_seq_len`` chunks of exactly ``max_seq_len``
    tokens (the tail is dropped); every position is a training target, and a chunk may start
    mid-document — the ``bos``/``eos`` markers tell the model where documents meet.
    packing=False (upstream): one example per document, ``ids`` cut to ``max_seq_len - 2`` before
    ``bos``/``eos`` are added; the collate function pads and masks the padding out.
    The whole file is tokenized once, at construction (a progress bar shows it for big files),
    streaming: a document of any length costs memory for its text and its tokens (4 bytes each),
    not for the tokenizer's whole encoding of it.
    """

    def __init__(self, path, tokenizer, max_seq_len: int = 128, packing: bool = True,
                 max_docs: int = 0, progress: bool = False):
        if max_seq_len < 3:
            raise ValueError(f"max_seq_len must be at least 3 (bos, a token, eos), got {max_seq_len}")
        self.path, self.max_seq_len, self.packing = Path(path), max_seq_len, packing
        # C arrays, not lists of Python ints (28 bytes each): int32 tokens take 4 bytes apiece
        tokens, lengths = array("i"), array("q")
        for pieces in _encode_texts(self.path, tokenizer, max_docs, progress):
            before = len(tokens)
            tokens.append(BOS_ID)
            budget = None if packing else max_seq_len - 2
            for ids in pieces:
                if budget is not None:
                    ids, budget = ids[:budget], budget - min(budget, len(ids))
                tokens.extend(ids)
                if budget == 0:
                    break  # the rest of a long document would be cut off anyway
            tokens.append(EOS_ID)
            lengths.append(len(tokens) - before)
        if not lengths:
            raise ValueError(f"{self.path}: no documents")
        self.tokens = torch.frombuffer(tokens, dtype=torch.int32)  # C int: 4 bytes on every platform torch runs on
        self.document_lengths = torch.frombuffer(lengths, dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), self.document_lengths.cumsum(0)])
        if packing and len(self.tokens) < max_seq_len:
            raise ValueError(f"{self.path}: {len(self.tokens)} tokens cannot fill one chunk of {max_seq_len}")

    def __len__(self) -> int:
        if self.packing:
            return len(self.tokens) // self.max_seq_len
        return len(self.document_lengths)

    def __getitem__(self, index: int) -> dict:
        if self.packing:
            start = index * self.max_seq_len
            ids = self.tokens[start:start + self.max_seq_len]
        else:
            ids = self.tokens[self.offsets[index]:self.offsets[index + 1]]
        ids = ids.long()
        return {"input_ids": ids, "labels": ids.clone()}


class SFTDataset(Dataset):
    """Chat conversations with the assistant-only loss mask, for supervised fine-tuning.

    Each row is rendered with the chat template when it is read (deterministic: no random system
    prompts, unlike upstream MiniMind's SFT dataset, which adds one at random), cut to `max_seq_len` tokens; a reply cut by truncation is
    supervised up to the cut. ``labels = ids`` where the mask is 1, else IGNORE_INDEX.
    `supervise_all=True` trains on every token (system and user turns too) — the ablation
    chapter 5 measures; it is never what you want for a chat model.
    """

    def __init__(self, path, tokenizer, max_seq_len: int = 256, supervise_all: bool = False,
                 max_rows: int = 0):
        self.path, self.tokenizer, self.max_seq_len = Path(path), tokenizer, max_seq_len
        self.supervise_all = supervise_all
        self.conversations = []
        for row in read_jsonl(self.path, "sft"):
            self.conversations.append(row["conversations"])
            if max_rows and len(self.conversations) >= max_rows:
                break
        if not self.conversations:
            raise ValueError(f"{self.path}: no conversations")

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> dict:
        ids, mask = self.tokenizer.render_conversation(self.conversations[index], max_len=self.max_seq_len)
        ids = torch.tensor(ids, dtype=torch.long)
        if self.supervise_all:
            labels = ids.clone()
        else:
            labels = torch.where(torch.tensor(mask, dtype=torch.bool), ids, IGNORE_INDEX)
        return {"input_ids": ids, "labels": labels}


class DPODataset(Dataset):
    """Preference pairs for DPO: the same prompt with a chosen and a rejected reply.

    Every row must be a usable pair (`minimind.data.jsonl.check_preference_pair`: one prompt, two
    different non-empty assistant replies) and keep at least one reply token of each after
    truncation to `max_seq_len` (else its log-prob would score nothing); a row that is not fails
    with a DataError naming the file and the line (truncation when the example is read).

    An example is ``{"chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"}``: each
    ``*_ids`` is the whole rendered conversation (LongTensor, cut to `max_seq_len`), each
    ``*_mask`` a BoolTensor of the same length, True where that token is a supervised target
    (an assistant reply token, its ``<|im_end|>`` and the newline after it). Masks are
    unshifted like labels: ``mask[t]`` refers to token ``t``, whose log-probability is read
    from ``logits[t-1]``. Pass them as they are — ``sequence_logps(logits, ids, mask)`` does the
    shift itself. `reference_logps`, once set (a (N, 2) tensor, see `minimind.train.dpo`), adds
    ``reference_chosen_logps`` and ``reference_rejected_logps`` to every example.
    :func:`collate_dpo` pads all four to one common length (pad id 0, mask False), so chosen and
    rejected can be concatenated along the batch axis for a single forward pass.
    """

    def __init__(self, path, tokenizer, max_seq_len: int = 256, max_rows: int = 0):
        self.path, self.tokenizer, self.max_seq_len = Path(path), tokenizer, max_seq_len
        self.pairs, self.line_numbers = [], []
        report = JsonlReport()
        for row in read_jsonl(self.path, "dpo", report=report):
            try:
                check_preference_pair(row)
            except ValueError as error:
                raise DataError(f"{self.path}:{report.line}: {error}") from None
            self.pairs.append((row["chosen"], row["rejected"]))
            self.line_numbers.append(report.line)
            if max_rows and len(self.pairs) >= max_rows:
                break
        if not self.pairs:
            raise ValueError(f"{self.path}: no preference pairs")
        self.reference_logps: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        example = {}
        for name, messages in zip(("chosen", "rejected"), self.pairs[index]):
            ids, mask = self.tokenizer.render_conversation(messages, max_len=self.max_seq_len)
            example[f"{name}_ids"] = torch.tensor(ids, dtype=torch.long)
            example[f"{name}_mask"] = torch.tensor(mask, dtype=torch.bool)
            if not example[f"{name}_mask"][1:].any():
                raise DataError(
                    f"{self.path}:{self.line_numbers[index]}: the {name} reply is cut away entirely by "
                    f"--max_seq_len {self.max_seq_len}; raise it or shorten the prompt")
        if self.reference_logps is not None:
            example[REFERENCE_KEYS[0]], example[REFERENCE_KEYS[1]] = self.reference_logps[index]
        return example


def pad_right(sequences: Sequence[torch.Tensor], value, length: int | None = None) -> torch.Tensor:
    """Stack 1-D tensors into (B, length), filling the right end with `value`."""
    length = length if length is not None else max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), value, dtype=sequences[0].dtype)
    for row, sequence in enumerate(sequences):
        out[row, : len(sequence)] = sequence
    return out


def collate_causal_lm(examples: Sequence[dict]) -> dict:
    """Batch ``{"input_ids", "labels"}`` examples: pad ids with PAD_ID and labels with IGNORE_INDEX."""
    return {
        "input_ids": pad_right([e["input_ids"] for e in examples], PAD_ID),
        "labels": pad_right([e["labels"] for e in examples], IGNORE_INDEX),
    }


def collate_dpo(examples: Sequence[dict]) -> dict:
    """Batch DPO examples; chosen and rejected share one length so they can be concatenated. The
    precomputed reference log-probs, when the examples carry them, are stacked (B,) each."""
    length = max(max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples)
    batch = {}
    for name in ("chosen", "rejected"):
        batch[f"{name}_ids"] = pad_right([e[f"{name}_ids"] for e in examples], PAD_ID, length)
        batch[f"{name}_mask"] = pad_right([e[f"{name}_mask"] for e in examples], False, length)
    if REFERENCE_KEYS[0] in examples[0]:
        for key in REFERENCE_KEYS:
            batch[key] = torch.stack([e[key] for e in examples])
    return batch


def padding_efficiency(dataset: PretrainDataset, batch_size: int, static: bool = False, seed: int = 0) -> float:
    """Fraction of the positions a padded pretraining run computes that hold real tokens.

    Batches are drawn in a seeded random order, as in training; `static=True` pads every batch
    to `max_seq_len` (upstream), else to the longest document of the batch. A packed dataset is
    1.0 by construction.
    """
    if dataset.packing:
        return 1.0
    order = torch.randperm(len(dataset.document_lengths), generator=torch.Generator().manual_seed(seed))
    lengths = dataset.document_lengths[order]
    real = computed = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start:start + batch_size]
        real += int(chunk.sum())
        computed += len(chunk) * (dataset.max_seq_len if static else int(chunk.max()))
    return real / computed


def _encode_texts(path: Path, tokenizer, max_docs: int, progress: bool):
    """For every row, its text's token ids as an iterable of pieces: short texts are encoded in
    parallel batches (of ENCODE_CHUNK texts, ENCODE_CHUNK_CHARS characters at most), a long one on
    its own in windows (`MiniMindTokenizer.encode_pieces`), so memory stays bounded by a batch
    or a window plus the text itself, whatever a line holds."""
    from itertools import islice

    rows = read_jsonl(path, "pretrain")
    if max_docs:
        rows = islice(rows, max_docs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"tokenizing {path.name}", unit=" docs")
    batch, batch_chars = [], 0

    def encoded_batch():
        yield from ([ids] for ids in tokenizer.encode_batch(batch))
        if bar is not None:
            bar.update(len(batch))

    for row in rows:
        text = row["text"]
        if len(text) > ENCODE_CHUNK_CHARS:
            yield from encoded_batch()
            batch, batch_chars = [], 0
            yield tokenizer.encode_pieces(text)
            if bar is not None:
                bar.update(1)
            continue
        batch.append(text)
        batch_chars += len(text)
        if len(batch) == ENCODE_CHUNK or batch_chars > ENCODE_CHUNK_CHARS:
            yield from encoded_batch()
            batch, batch_chars = [], 0
    yield from encoded_batch()
    if bar is not None:
        bar.close()
