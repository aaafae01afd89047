"""Prepare a raw corpus for training: `python -m minimind.data.prepare <command> …` (or `minimind data …`).

Commands (each streams its input once, in bounded memory, and writes its output atomically):

    clean     IN OUT   drop records that fail the quality filters (length, script, noise, repetition, structure)
    dedup     IN OUT   drop exact duplicates (hash) and near duplicates (MinHash LSH)
    convert   IN OUT   change format: OpenAI/ShareGPT/preference/reasoning rows → MiniMind's schemas, SFT → pretraining text
    stats     IN       counts, length distributions, script mix, truncation at max_seq_len; JSON + PNG with --out
    pipeline  IN OUT   convert (optional), clean, dedup and stats in one pass

Formats by file name: .jsonl, .txt, .parquet (optionally .gz). Every command that filters ends with a
summary — read, kept, dropped by which filter — and checks that kept + dropped == read. Token
lengths need `--tokenizer PATH` (a tokenizer directory or tokenizer.json); without it, lengths are
counted in characters. Malformed lines stop the run with `path:line: reason`; `--skip_bad` counts
them as dropped (`bad_input`) and goes on. `--dropped FILE.jsonl` keeps every dropped record with
its line, filter and reason. `--to pretrain` drops a record whose conversion leaves no text
(`empty_text`). No output may be the input file.

Upstream MiniMind's recipes, with its real files:

    # pretrain_hq.jsonl: the Chinese part of an SFT corpus as short texts
    python -m minimind.data.prepare pipeline sft_zh.jsonl pretrain_hq.jsonl --to pretrain \\
        --scripts han --min_script_share 0.5 --max_chars 511 --pack_chars 511
    # sft_512.jsonl: no symbol noise, mostly Chinese, whole conversation under 512 tokens
    python -m minimind.data.prepare pipeline sft_raw.jsonl sft_512.jsonl --scripts han \\
        --min_script_share 0.5 --tokenizer model/ --max_tokens 511
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from minimind.commandline import BooleanFlag, accept_both_spellings
from minimind.data.filters import (ExactDeduplicator, NearDeduplicator, RecordError, Sample,
                                   conversation_format_filter, length_filter, markup_filter,
                                   preference_pair_filter, repeated_lines_filter,
                                   repeated_ngrams_filter, role_order_filter, script_filter,
                                   symbol_filter, token_length_filter)
from minimind.data.jsonl import DataError

BAD_INPUT = "bad_input"
EMPTY_TEXT = "empty_text"  # `--to pretrain` left nothing (e.g. a conversation of only a system prompt)
# How many error messages a summary keeps to show; all of them are counted.
KEPT_ERRORS = 5


@dataclass
class Summary:
    """What a run did: records read, kept, dropped by each filter (in filter order), written."""

    read: int = 0
    kept: int = 0
    written: int = 0
    dropped: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)

    def drop(self, name: str) -> None:
        self.dropped[name] = self.dropped.get(name, 0) + 1

    def check_balance(self) -> None:
        """Raise AssertionError unless every record read was either kept or dropped by a filter."""
        dropped = sum(self.dropped.values())
        if self.kept + dropped != self.read:
            raise AssertionError(f"lost records: read {self.read}, kept {self.kept}, dropped {dropped}")

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "written": self.written,
                "dropped": dict(self.dropped), "errors": list(self.errors)}

    def format(self) -> str:
        dropped = sum(self.dropped.values())
        width = max([len(name) for name in self.dropped] + [8])
        lines = [f"read     {self.read:>10}", f"kept     {self.kept:>10}  ({self.kept / max(self.read, 1):.1%})"]
        if self.written != self.kept:
            lines.append(f"written  {self.written:>10}  (records after packing)")
        lines.append(f"dropped  {dropped:>10}")
        lines += [f"  {name:<{width}} {count:>8}" for name, count in self.dropped.items()]
        lines += [f"  first errors: {message}" if index == 0 else f"                {message}"
                  for index, message in enumerate(self.errors)]
        return "\n".join(lines)


def run(input_path, output_path, filters=(), *, convert_to: str | None = None, convert_from: str = "auto",
        pack_chars: int | None = None, skip_bad: bool = False, dropped_path=None, stats=None,
        text_unit: str = "line", progress: bool = False) -> Summary:
    """Stream `input_path` through an optional conversion and the `filters` (in order: a record is
    charged to the first filter that drops it) into `output_path`.

    `pack_chars` joins kept pretraining texts up to that many characters; `stats` (a
    `StatsCollector`) measures what is written; `dropped_path` receives every dropped record as
    `{"line", "filter", "reason", "record"}`. Returns the `Summary`, after checking kept + dropped == read.
    """
    from minimind.data.convert import convert_record, pack_texts
    from minimind.data.io import RecordWriter, iter_records

    summary = Summary(dropped={BAD_INPUT: 0, **{f.name: 0 for f in filters}})
    output_path, dropped_path = Path(output_path), Path(dropped_path) if dropped_path else None
    for name, path in (("output file", output_path), ("dropped-records file", dropped_path)):
        if path is not None and _same_file(path, input_path):
            raise ValueError(f"the {name} {path} is the input file {input_path}: writing it would destroy the input")
    if dropped_path is not None and _same_file(dropped_path, output_path):
        raise ValueError("the dropped-records file must differ from the output file")

    with RecordWriter(output_path, text_unit=text_unit) as writer, \
            (RecordWriter(dropped_path) if dropped_path else _NoWriter()) as dropped_writer:

        def reject(line, name, reason, record):
            summary.drop(name)
            dropped_writer.write({"line": line, "filter": name, "reason": reason, "record": record})

        def bad(error: DataError, line, record):
            if not skip_bad:
                raise error
            if len(summary.errors) < KEPT_ERRORS:
                summary.errors.append(str(error))
            reject(line, BAD_INPUT, str(error), record)

        def on_unreadable_line(line: int, error: DataError):
            summary.read += 1
            bad(error, line, None)

        def kept_records():
            for line, record in iter_records(input_path, text_unit=text_unit, progress=progress, desc="prepare",
                                             on_bad=on_unreadable_line if skip_bad else None):
                summary.read += 1
                try:
                    if convert_to:
                        record = convert_record(record, convert_to, convert_from)
                        if convert_to == "pretrain" and not record["text"]:  # training refuses an empty text
                            reject(line, EMPTY_TEXT, "the conversion left no text", record)
                            continue
                    sample = Sample(record, line)
                    for record_filter in filters:
                        reason = record_filter.check(sample)
                        if reason is not None:
                            reject(line, record_filter.name, reason, record)
                            break
                    else:
                        summary.kept += 1
                        yield record
                except RecordError as error:
                    bad(DataError(f"{input_path}:{line}: {error}"), line, record)

        records = kept_records()
        if pack_chars:
            records = pack_texts(records, pack_chars)
        for record in records:
            writer.write(record)
            if stats is not None:
                try:
                    stats.add(record)
                except RecordError as error:
                    raise DataError(f"{output_path}: record {writer.count}: {error}") from None
        summary.written = writer.count
    summary.check_balance()
    return summary


def _same_file(path: Path, other) -> bool:
    """True when `path` names the file `other` names (through links and `.`/`..` too)."""
    other = Path(other)
    if path.resolve() == other.resolve():
        return True
    return path.exists() and other.exists() and os.path.samefile(path, other)


class _NoWriter:
    """Stands in for the dropped-records writer when none was asked for."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None

    def write(self, record):
        return None


# --------------------------------------------------------------------------------------------
# Building the filters from the command line


def _threshold(text: str):
    """A float, or 'off' (None) to disable the filter."""
    if text.lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None


def _scripts(text: str) -> tuple:
    """Script names for --scripts, refused with the list of known ones."""
    from minimind.data.filters import parse_scripts

    try:
        return parse_scripts(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def quality_filters(args, tokenizer=None) -> list:
    """The `clean` filters the flags ask for: structure first (a malformed record cannot be
    measured), then content, then length — so junk that also happens to be long is charged to
    what is wrong with it, and tokens are only counted for records that are otherwise fine."""
    filters = [conversation_format_filter(), role_order_filter(), preference_pair_filter()]
    if args.scripts:
        filters.append(script_filter(args.min_script_share, args.scripts))
    if args.max_markup_share is not None:
        filters.append(markup_filter(args.max_markup_share))
    if args.max_symbol_share is not None:
        filters.append(symbol_filter(args.max_symbol_share))
    if args.max_repeated_line_share is not None:
        filters.append(repeated_lines_filter(args.max_repeated_line_share))
    if args.max_repeated_ngram_share is not None:
        filters.append(repeated_ngrams_filter(args.max_repeated_ngram_share, args.ngram_size))
    if args.min_chars is not None or args.max_chars is not None:
        filters.append(length_filter(args.min_chars, args.max_chars))
    if args.min_tokens is not None or args.max_tokens is not None:
        from minimind.data.stats import RecordLength

        if tokenizer is None:
            raise SystemExit("--min_tokens/--max_tokens need --tokenizer PATH (or use --min_chars/--max_chars)")
        filters.append(token_length_filter(RecordLength(tokenizer), args.min_tokens, args.max_tokens))
    return filters


def dedup_filters(args) -> list:
    filters = []
    if args.exact:
        filters.append(ExactDeduplicator())
    if args.near_threshold is not None:
        filters.append(NearDeduplicator(args.near_threshold, args.num_perm, args.shingle_size, args.seed))
    return filters


def _add_io_flags(parser, with_output=True):
    parser.add_argument("input", help="input file: .jsonl, .txt or .parquet (optionally .gz)")
    if with_output:
        parser.add_argument("output", help="output file (.jsonl, .txt or .parquet, optionally .gz), written atomically")
        parser.add_argument("--dropped", metavar="FILE", help="also write every dropped record, with its line, filter and reason, to this jsonl")
        parser.add_argument("--skip_bad", action="store_true", help="count malformed lines as dropped (bad_input) instead of stopping")
    else:
        parser.add_argument("--skip_bad", action="store_true", help="count and report malformed lines instead of stopping")
    parser.add_argument("--text_unit", choices=("line", "paragraph"), default="line",
                        help="for .txt files: one document per line (default) or per blank-line-separated paragraph")
    parser.add_argument("--progress", action=BooleanFlag, default=None,
                        help="show a progress bar (default: when stderr is a terminal)")


def _add_clean_flags(parser):
    group = parser.add_argument_group("quality filters ('off' disables a filter)")
    group.add_argument("--min_chars", type=int, default=1, help="drop texts shorter than this many characters (default 1: drop empty texts)")
    group.add_argument("--max_chars", type=int, help="drop texts longer than this many characters (upstream pretraining: 511)")
    group.add_argument("--tokenizer", metavar="PATH", help="tokenizer directory or tokenizer.json, for token lengths")
    group.add_argument("--min_tokens", type=int, help="drop samples shorter than this many training tokens (needs --tokenizer)")
    group.add_argument("--max_tokens", type=int, help="drop samples longer than this many training tokens, chat template included (needs --tokenizer)")
    group.add_argument("--scripts", type=_scripts, help="comma-separated scripts to require, e.g. 'han' or 'han,latin' "
                       "(han, latin, cyrillic, greek, arabic, devanagari, thai, kana, hangul; cjk = han)")
    group.add_argument("--min_script_share", type=float, default=0.5, help="with --scripts: least share of letters in those scripts (default 0.5)")
    group.add_argument("--max_symbol_share", type=_threshold, default=0.1, help="most share of symbol noise among visible characters (default 0.1)")
    group.add_argument("--max_markup_share", type=_threshold, default=0.1, help="most share of characters in HTML tags, entities, URLs (default 0.1)")
    group.add_argument("--max_repeated_line_share", type=_threshold, default=0.4, help="most share of characters in repeated lines (default 0.4)")
    group.add_argument("--max_repeated_ngram_share", type=_threshold, default=0.8, help="most share of units covered by repeated n-grams (default 0.8)")
    group.add_argument("--ngram_size", type=int, default=5, help="n of the repeated n-gram filter (default 5)")


def _add_dedup_flags(parser):
    group = parser.add_argument_group("deduplication")
    group.add_argument("--exact", action=BooleanFlag, default=True, help="drop exact duplicates of normalized text (default on)")
    group.add_argument("--near_threshold", type=_threshold, default=0.8, help="MinHash LSH Jaccard threshold for near duplicates (default 0.8; 'off' disables)")
    group.add_argument("--num_perm", type=int, default=128, help="MinHash permutations (default 128)")
    group.add_argument("--shingle_size", type=int, default=5, help="characters per shingle (default 5)")
    group.add_argument("--seed", type=int, default=1, help="seed of the MinHash functions (default 1)")


def _add_convert_flags(parser, required: bool):
    from minimind.data.convert import SOURCE_FORMATS, TARGET_FORMATS

    group = parser.add_argument_group("conversion")
    group.add_argument("--to", choices=TARGET_FORMATS, required=required, default=None,
                       help="target format: minimind (SFT conversations), pretrain (text), dpo, reasoning, or back to openai/sharegpt/preference")
    group.add_argument("--from", dest="source", choices=("auto",) + SOURCE_FORMATS, default="auto",
                       help="source format (default: detected per record)")
    group.add_argument("--pack_chars", type=int, help="with --to pretrain: join consecutive texts up to this many characters")


def _add_stats_flags(parser, option: str):
    group = parser.add_argument_group("statistics")
    if option == "--out":
        group.add_argument("--out", metavar="DIR", help="write stats.json and PNG histograms into this directory")
    else:
        group.add_argument("--stats", metavar="DIR", help="write stats.json and PNG histograms of the output into this directory")
    group.add_argument("--max_seq_len", type=int, nargs="+", default=[512], help="report truncation at these lengths (default 512)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minimind.data.prepare", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    clean = commands.add_parser("clean", help="drop records that fail the quality filters")
    _add_io_flags(clean)
    _add_clean_flags(clean)
    dedup = commands.add_parser("dedup", help="drop exact and near duplicates")
    _add_io_flags(dedup)
    _add_dedup_flags(dedup)
    convert = commands.add_parser("convert", help="convert between chat formats and MiniMind's schemas")
    _add_io_flags(convert)
    _add_convert_flags(convert, required=True)
    stats = commands.add_parser("stats", help="counts, lengths, script mix, truncation; JSON and PNG with --out")
    _add_io_flags(stats, with_output=False)
    stats.add_argument("--tokenizer", metavar="PATH", help="tokenizer directory or tokenizer.json (default: count characters)")
    _add_stats_flags(stats, "--out")
    pipeline = commands.add_parser("pipeline", help="convert, clean, dedup and measure in one pass")
    _add_io_flags(pipeline)
    _add_convert_flags(pipeline, required=False)
    _add_clean_flags(pipeline)
    _add_dedup_flags(pipeline)
    _add_stats_flags(pipeline, "--stats")
    return accept_both_spellings(parser)


def main(argv=None) -> int:
    """Run one command; print its summary (or report) to stdout. Returns 0, or 2 after an error in the
    input, an option or a write (printed in one line)."""
    args = build_parser().parse_args(argv)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    try:
        return _run_command(args, progress)
    except (DataError, ValueError, OSError) as error:  # DataError names path:line; the others the option or file
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run_command(args, progress: bool) -> int:
    from minimind.data.stats import StatsCollector, collect_stats, load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer) if getattr(args, "tokenizer", None) else None
    if args.command == "stats":
        report = collect_stats(args.input, tokenizer, args.max_seq_len, progress=progress, text_unit=args.text_unit,
                               skip_bad=args.skip_bad)
        print(report.format())
        if args.out:
            for path in report.save(args.out).values():
                print(f"wrote {path}")
        return 0

    if getattr(args, "pack_chars", None) and args.to != "pretrain":
        raise SystemExit("--pack_chars joins pretraining texts: use it with --to pretrain")
    filters = []
    if args.command in ("clean", "pipeline"):
        filters += quality_filters(args, tokenizer)
    if args.command in ("dedup", "pipeline"):
        filters += dedup_filters(args)
    stats = None
    if args.command == "pipeline" and args.stats:
        stats = StatsCollector(tokenizer, args.max_seq_len, path=args.output)
    summary = run(args.input, args.output, filters, convert_to=getattr(args, "to", None),
                  convert_from=getattr(args, "source", "auto"), pack_chars=getattr(args, "pack_chars", None),
                  skip_bad=args.skip_bad, dropped_path=args.dropped, stats=stats,
                  text_unit=args.text_unit, progress=progress)
    print(f"{args.command}: {args.input} -> {args.output}")
    for record_filter in filters:
        print(f"  {record_filter.name:<20} {record_filter.description}")
    print(summary.format())
    if stats is not None:
        report = stats.report()
        print(report.format())
        for path in report.save(args.stats).values():
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
