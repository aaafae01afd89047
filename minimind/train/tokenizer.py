"""The first stage of the pipeline: train the byte-level BPE tokenizer on a corpus.

    python -m minimind.train.tokenizer --vocab_size 2048 --out out/tokenizer   # the book's tokenizer
    python -m minimind.train.tokenizer --data corpus_a.jsonl corpus_b.jsonl --vocab_size 6400 --out out/tok

Without `--data` it reads the book's synthetic training text: the pretraining corpus and the
conversations of the fine-tuning sets (so every character a later stage writes has a token). The tokenizer itself (the BPE trainer,
the special tokens, the chat template) is `minimind.tokenizer`; this module is the stage that runs
it on files and saves the result, as `minimind tokenizer` and the zoo's "tokenizer" artefact do.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

from minimind.commandline import accept_both_spellings, run_main

BOOK_VOCAB_SIZE = 2048  # the book's tokenizer: the vocabulary of the `book` preset
BOOK_CORPUS = ("pretrain", "sft", "lora_identity", "lora_domain")  # its training text (train splits)


@dataclass(frozen=True)
class TokenizerConfig:
    """What to train a tokenizer on, and where to put it."""

    data: tuple[str, ...] = ()  # jsonl files with 'text' or 'conversations' rows (empty: the synthetic corpus)
    out_dir: str = "out/tokenizer"  # empty: save nothing
    vocab_size: int = 6400
    max_docs: int = 0  # rows read per file (0 = all)
    split_digits: bool = True
    split_cjk: bool = True  # each CJK character its own pre-token (False: runs of them, which BPE merges into phrases)


def corpus_texts(paths: Sequence, max_docs: int = 0) -> Iterable[str]:
    """The training text of every row of every file in `paths`, in order."""
    from minimind.data.jsonl import texts_from_jsonl

    for path in paths:
        yield from texts_from_jsonl(path, max_docs)


def data_paths(config: TokenizerConfig) -> list[str]:
    if config.data:
        return list(config.data)
    from minimind.data.synthetic import dataset_path

    return [str(dataset_path(name, "train")) for name in BOOK_CORPUS]


def run(config: TokenizerConfig):
    """Train a tokenizer as `config` says and save it into `config.out_dir`; returns the `MiniMindTokenizer`."""
    from minimind.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(corpus_texts(data_paths(config), config.max_docs), vocab_size=config.vocab_size,
                                split_digits=config.split_digits, split_cjk=config.split_cjk)
    if config.out_dir:
        tokenizer.save(config.out_dir)
    return tokenizer


def book_tokenizer():
    """The book's tokenizer, trained afresh (a second or two): vocabulary 2048 on the synthetic
    training text, the same tokenizer the zoo caches as "tokenizer"."""
    return run(book_config(out_dir=""))


def book_config(**changes) -> TokenizerConfig:
    """The config of the book's tokenizer (the zoo's "tokenizer" artefact)."""
    return dataclasses.replace(TokenizerConfig(vocab_size=BOOK_VOCAB_SIZE), **changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimind.train.tokenizer",
                                     description="Train a byte-level BPE tokenizer.")
    parser.add_argument("--data", nargs="+", help="jsonl files with 'text' or 'conversations' rows (default: the book's synthetic training text)")
    parser.add_argument("--out", default="out/tokenizer", help="output directory (tokenizer.json + tokenizer_config.json)")
    parser.add_argument("--vocab_size", type=int, default=6400)
    parser.add_argument("--max_docs", type=int, default=0, help="read at most this many rows per file (0 = all)")
    parser.add_argument("--no_split_digits", action="store_true", help="let BPE merge digits (MiniMind2 behaviour)")
    parser.add_argument("--no_split_cjk", action="store_true",
                        help="let BPE merge runs of CJK characters into phrase tokens (MiniMind2 behaviour)")
    return accept_both_spellings(parser)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = TokenizerConfig(data=tuple(args.data or ()), out_dir=args.out, vocab_size=args.vocab_size,
                             max_docs=args.max_docs, split_digits=not args.no_split_digits,
                             split_cjk=not args.no_split_cjk)
    tokenizer = run(config)
    sample = [text for _, text in zip(range(2000), corpus_texts(data_paths(config), config.max_docs))]
    characters = sum(len(text) for text in sample)
    tokens = sum(len(ids) for ids in tokenizer.encode_batch(sample))
    print(f"vocabulary: {tokenizer.vocab_size} tokens (requested {config.vocab_size})")
    print(f"compression on the first {len(sample)} documents: {characters / max(tokens, 1):.2f} characters/token")
    print(f"saved to {config.out_dir}/tokenizer.json and tokenizer_config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main("python -m minimind.train.tokenizer", main))
