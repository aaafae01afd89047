"""Streaming record I/O (`minimind.data.io`) and the prepare pipeline end to end: formats, bad
lines with file:line, atomic writes, kept + dropped == read, and a few hundred MB streamed under
a fixed memory bound."""
import gzip
import json
from collections import Counter
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minimind.data.dirty import SFT_DIRT, write_dirty_sample
from minimind.data.io import PARQUET_BATCH_ROWS, RecordWriter, detect_format, iter_records, write_records
from minimind.data.jsonl import DataError
from minimind.data.prepare import Summary, main, run
from minimind.data import filters as F

RECORDS = [{"text": "北京是中国的首都。"}, {"text": "Paris is the capital of France."},
           {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------- readers and writers


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data.parquet"])
def test_records_round_trip_through_every_format(tmp_path, name):
    path = tmp_path / name
    assert write_records(path, RECORDS[:2]) == 2
    assert [record for _, record in iter_records(path)] == RECORDS[:2]
    assert [line for line, _ in iter_records(path)] == [1, 2]


def test_jsonl_keeps_unicode_unescaped_and_gzip_is_reproducible(tmp_path):
    write_records(tmp_path / "a.jsonl", RECORDS)
    assert "北京" in (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    write_records(tmp_path / "a.jsonl.gz", RECORDS)
    first = (tmp_path / "a.jsonl.gz").read_bytes()
    write_records(tmp_path / "a.jsonl.gz", RECORDS)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == first
    assert gzip.decompress(first) == (tmp_path / "a.jsonl").read_bytes()


def test_text_files_by_line_and_by_paragraph(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\nsecond line\n\n\nthird\nstill third\n", encoding="utf-8")
    assert list(iter_records(path)) == [(1, {"text": "first line"}), (2, {"text": "second line"}),
                                        (5, {"text": "third"}), (6, {"text": "still third"})]
    assert list(iter_records(path, text_unit="paragraph")) == [(1, {"text": "first line\nsecond line"}),
                                                               (5, {"text": "third\nstill third"})]
    write_records(tmp_path / "out.txt", [{"text": "a\nb"}, {"text": "c"}], text_unit="paragraph")
    assert (tmp_path / "out.txt").read_text() == "a\nb\n\nc\n"
    with pytest.raises(DataError, match="record 1: the text holds a newline"):
        write_records(tmp_path / "out.txt", [{"text": "a\nb"}])


def test_parquet_with_nested_conversations(tmp_path):
    pytest.importorskip("pyarrow")
    rows = [RECORDS[2], {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    write_records(tmp_path / "sft.parquet", rows)
    assert [record for _, record in iter_records(tmp_path / "sft.parquet")] == rows
    with pytest.raises(DataError, match="record 2 has fields \\['extra', 'text'\\] but the file's records have"):
        with RecordWriter(tmp_path / "bad.parquet") as writer:
            writer.write({"text": "a"})
            writer._flush_parquet()
            writer.write({"text": "b", "extra": 1})
    assert not (tmp_path / "bad.parquet").exists()


@pytest.mark.parametrize("content, message", [
    (b'{"text": "ok"}\n{"text": broken}\n', ":2: invalid JSON"),
    (b'{"text": "ok"}\n{"text": "a\tb"}\n', r":2: invalid JSON \(Invalid control character at column 12\)"),
    (b'{"text": "ok"}\n\n[1, 2]\n', ":3: expected a JSON object, got list"),
    (b'{"text": "ok"}\n{"text": "\xff\xfe"}\n', ":2: not valid UTF-8"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{path}{message}"):
        list(iter_records(path))
    skipped = []
    assert [record for _, record in iter_records(path, on_bad=lambda line, error: skipped.append(line))] == [{"text": "ok"}]
    assert skipped == [int(message.split(":")[1])]


def test_byte_order_mark_and_blank_lines_are_not_records(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n   \n{"text": "b"}\n')
    assert list(iter_records(path)) == [(1, {"text": "a"}), (3, {"text": "b"})]


@pytest.mark.parametrize("name, message", [("x.json", "cannot be streamed"), ("x.csv", "unknown file type"),
                                           ("x.parquet.gz", "not supported")])
def test_unsupported_file_names_are_refused(name, message):
    with pytest.raises(DataError, match=message):
        detect_format(name)


def test_writer_leaves_nothing_behind_when_interrupted(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with RecordWriter(path) as writer:
            writer.write({"text": "new"})
            raise RuntimeError("interrupted")
    assert path.read_text() == "old\n"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # and no temporary is left


# ---------------------------------------------------------------------------- no data loss

MIXED = [{"text": "plain text"},
         {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
         {"text": "more text", "source": "web"}]
NESTED_MIXED = [{"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                {"conversations": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "a", "reasoning_content": "r"}]}]


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_jsonl_holds_every_field_of_every_record(tmp_path, name):
    records = MIXED + NESTED_MIXED + [{"text": "lone surrogate \ud800 kept", "n": 1.5, "none": None}]
    write_records(tmp_path / name, records)
    assert [record for _, record in iter_records(tmp_path / name)] == records


@pytest.mark.parametrize("records, message", [
    (MIXED[:2], r"record 2 has fields \['conversations'\] but the file's records have \['text'\]"),
    (MIXED[1:], r"record 2 has fields \['source', 'text'\] but the file's records have \['conversations'\]"),
    (NESTED_MIXED, r"record 1 would not read back as written"),
])
def test_parquet_refuses_records_it_would_not_read_back_equal(tmp_path, records, message):
    pytest.importorskip("pyarrow")
    with pytest.raises(DataError, match=message):
        write_records(tmp_path / "mixed.parquet", records)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_parquet_refuses_a_field_missing_from_a_later_batch(tmp_path):
    pytest.importorskip("pyarrow")
    records = [{"text": f"row {i}", "id": i} for i in range(PARQUET_BATCH_ROWS)] + [{"text": "no id"}]
    with pytest.raises(DataError, match=rf"record {PARQUET_BATCH_ROWS + 1} has fields \['text'\]"):
        write_records(tmp_path / "out.parquet", records)


def test_prepare_to_parquet_keeps_every_record_or_fails(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    source = tmp_path / "mixed.jsonl"
    write_records(source, [MIXED[i % 2] for i in range(900)])
    assert main(["clean", str(source), str(tmp_path / "out.parquet"), "--no-progress"]) == 2
    assert "record 2 has fields ['conversations']" in capsys.readouterr().err
    assert not (tmp_path / "out.parquet").exists()
    same_fields = tmp_path / "same.jsonl"
    write_records(same_fields, [MIXED[1]] * 3 + [NESTED_MIXED[0]])
    assert main(["convert", str(same_fields), str(tmp_path / "out.parquet"), "--to", "minimind"]) == 0
    assert [record for _, record in iter_records(tmp_path / "out.parquet")] == [MIXED[1]] * 3 + [NESTED_MIXED[0]]


@pytest.mark.parametrize("flag", ["output", "--dropped"])
def test_an_output_that_is_the_input_is_refused(tmp_path, capsys, flag):
    source = tmp_path / "in.jsonl"
    write_records(source, RECORDS)
    before = source.read_bytes()
    argv = ["clean", str(source), str(tmp_path / "out.jsonl") if flag == "--dropped" else str(source), "--no-progress"]
    if flag == "--dropped":
        argv += ["--dropped", str(tmp_path / "." / "in.jsonl")]
    assert main(argv) == 2
    assert f"is the input file {source}" in capsys.readouterr().err
    assert source.read_bytes() == before and not (tmp_path / "out.jsonl").exists()


def test_outputs_get_the_mode_an_ordinary_open_gives(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        for name in ("a.jsonl", "a.txt", "a.parquet"):
            write_records(tmp_path / name, RECORDS[:2])
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(umask)


def test_convert_to_pretrain_drops_empty_texts_and_counts_them(tmp_path, capsys):
    from minimind.data.jsonl import read_jsonl

    rows = [{"conversations": [{"role": "system", "content": "only a system prompt"}]},
            {"conversations": [{"role": "user", "content": "  "}, {"role": "assistant", "content": ""}]},
            {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"text": ""}]
    write_records(tmp_path / "sft.jsonl", rows)
    summary = run(tmp_path / "sft.jsonl", tmp_path / "pre.jsonl", convert_to="pretrain",
                  dropped_path=tmp_path / "dropped.jsonl")
    assert (summary.read, summary.kept, summary.dropped["empty_text"]) == (4, 1, 3)
    assert [row["text"] for row in read_jsonl(tmp_path / "pre.jsonl", "pretrain")] == ["hi\nhello"]
    assert [row["line"] for row in _lines(tmp_path / "dropped.jsonl")] == [1, 2, 4]
    assert main(["convert", str(tmp_path / "sft.jsonl"), str(tmp_path / "pre.jsonl"), "--to", "pretrain"]) == 0
    assert re.search(r"^\s+empty_text\s+3$", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize("name, damage", [
    ("in.jsonl.gz", lambda data: data[: len(data) // 2]),  # cut short
    ("in.jsonl.gz", lambda data: data[:20] + b"\x00" * 40 + data[60:]),  # garbled
    ("in.parquet", lambda data: data[: len(data) // 2]),
    ("in.parquet", lambda data: b"not parquet at all"),
])
def test_a_corrupt_compressed_or_parquet_input_is_one_line_naming_the_file(tmp_path, capsys, name, damage):
    if name.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    path = tmp_path / name
    write_records(path, [{"text": f"document number {i} " * 20} for i in range(300)])
    path.write_bytes(damage(path.read_bytes()))
    assert main(["clean", str(path), str(tmp_path / "out.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}") and "\n" not in err, err
    assert not (tmp_path / "out.jsonl").exists()


def test_a_full_disk_while_writing_is_one_line_naming_the_file(tmp_path):
    source = tmp_path / "in.jsonl"
    write_records(source, [{"text": f"document number {i} " * 20} for i in range(500)])
    script = textwrap.dedent("""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
        import minimind.data.prepare
        sys.exit(minimind.data.prepare.main(sys.argv[1:]))
    """)
    out = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, "-c", script, "clean", str(source), str(out), "--no-progress",
                             "--max-repeated-ngram-share", "off"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == f"error: {out}: cannot write it (File too large)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


# ---------------------------------------------------------------------------- the pipeline


def test_summary_balance_check_fails_when_a_record_is_lost():
    Summary(read=3, kept=2, dropped={"chars": 1}).check_balance()
    with pytest.raises(AssertionError, match="lost records: read 3, kept 1, dropped 1"):
        Summary(read=3, kept=1, dropped={"chars": 1}).check_balance()


def test_run_charges_each_drop_to_the_first_filter_and_balances(tmp_path):
    counts = write_dirty_sample(tmp_path / "dirty.jsonl", "pretrain", clean_rows=400, seed=3)
    filters = [F.length_filter(20, 1000), F.script_filter(0.9, ["han", "latin"]), F.markup_filter(0.1),
               F.symbol_filter(0.1), F.repeated_lines_filter(0.4), F.repeated_ngrams_filter(0.8),
               F.ExactDeduplicator(), F.NearDeduplicator(0.8)]
    summary = run(tmp_path / "dirty.jsonl", tmp_path / "clean.jsonl", filters, skip_bad=True,
                  dropped_path=tmp_path / "dropped.jsonl")
    assert summary.read == sum(counts.values())
    assert summary.kept + sum(summary.dropped.values()) == summary.read
    assert summary.written == summary.kept == len(_lines(tmp_path / "clean.jsonl"))
    dropped = _lines(tmp_path / "dropped.jsonl")
    assert len(dropped) == sum(summary.dropped.values())
    assert summary.dropped["bad_input"] == counts["broken_json"] == 3
    by_dirt = {}
    for row in dropped:
        dirt = row["record"]["dirt"] if row["record"] else "broken_json"
        by_dirt.setdefault(dirt, {}).setdefault(row["filter"], 0)
        by_dirt[dirt][row["filter"]] += 1
    # every injected kind of dirt is caught, and by the filter made for it
    for dirt, expected in [("markup", "markup"), ("symbol_noise", "symbols"), ("foreign_script", "script"),
                           ("repeated_lines", "repeated_lines"), ("repeated_ngrams", "repeated_ngrams"),
                           ("too_short", "chars"), ("too_long", "chars"), ("exact_dup", "exact_dup")]:
        assert by_dirt[dirt] == {expected: counts[dirt]}, dirt
    assert by_dirt["near_dup"]["near_dup"] >= 0.7 * counts["near_dup"]


def test_pipeline_command_without_skip_bad_stops_at_the_bad_line(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "fine text here"}\n{"text": "unterminated\n', encoding="utf-8")
    assert main(["pipeline", str(path), str(tmp_path / "out.jsonl")]) == 2
    assert f"{path}:2: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_stats_command_reports_truncation_and_writes_plots(tmp_path, capsys):
    from minimind.data.stats import collect_stats

    path = tmp_path / "in.jsonl"
    write_records(path, [{"text": "x" * length} for length in (10, 20, 30, 40)] + RECORDS[2:])
    assert main(["stats", str(path), "--max-seq-len", "25", "100", "--out", str(tmp_path / "stats")]) == 0
    out = capsys.readouterr().out
    assert "5 samples (pretrain 4, sft 1)" in out and "max_seq_len 25    truncates 3 (60.0%)" in out
    report = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert report["chars"]["max"] == 40 and report["length_unit"] == "chars"
    for name in ("char_lengths.png", "training_lengths.png", "scripts.png"):
        assert (tmp_path / "stats" / name).read_bytes()[:4] == b"\x89PNG"
    # without a tokenizer, a pretraining row's training length is its characters
    assert collect_stats(path, max_seq_lens=[32]).lengths.tolist()[:4] == [10, 20, 30, 40]


def test_token_lengths_follow_the_training_rendering():
    from minimind.data.stats import RecordLength
    from minimind.tokenizer import MiniMindTokenizer, train_tokenizer

    tokenizer = train_tokenizer(["hello world, 你好世界"] * 50, vocab_size=300)
    length = RecordLength(tokenizer)
    assert length({"text": "hello world"}) == len(tokenizer.encode("hello world")) + 2
    conversation = RECORDS[2]["conversations"]
    assert length(RECORDS[2]) == len(tokenizer.render_conversation(conversation)[0])
    assert isinstance(tokenizer, MiniMindTokenizer)


# ---------------------------------------------------------------------------- memory bound

# A child process runs the command and reads its own peak RSS: VmHWM, the high-water mark of its
# process image. Not getrusage's ru_maxrss, which Linux carries over from the parent across
# fork + exec, so inside pytest (torch and models loaded) it would report the parent's peak and the
# bound could never fail. The bound applies to the growth over the peak after importing everything.
_MEASURE = textwrap.dedent("""
    import json, sys
    import minimind.data.prepare, minimind.data.convert, minimind.data.stats, minimind.data.io
    import numpy, tqdm.auto

    def peak_kib():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    base = peak_kib()
    rc = minimind.data.prepare.main(sys.argv[1:])
    print(json.dumps({"rc": rc, "base_kib": base, "peak_kib": peak_kib()}))
""")
FILE_MIB = 200
GROWTH_BOUND_MIB = 64
BASE_BOUND_MIB = 500


def _write_large_corpus(path, target_bytes: int, doc_chars: int = 2000) -> tuple:
    """Random Chinese documents (numpy-generated: seconds for hundreds of MB), every 50th written
    twice; returns (lines, duplicate lines)."""
    rng = np.random.default_rng(0)
    lines = duplicates = 0
    with open(path, "wb") as handle:
        while handle.tell() < target_bytes:
            codes = rng.integers(0x4E00, 0x9FA5, size=(256, doc_chars), dtype=np.uint32)
            codes[:, 11::23] = 0xFF0C  # ，
            block = codes.tobytes().decode("utf-32-le")
            chunk = []
            for index in range(256):
                chunk.append(json.dumps({"text": block[index * doc_chars:(index + 1) * doc_chars]}, ensure_ascii=False))
                if index % 50 == 49:
                    chunk.append(chunk[-1])
                    duplicates += 1
            handle.write(("\n".join(chunk) + "\n").encode("utf-8"))
            lines += len(chunk)
    return lines, duplicates


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc/self/status")
def test_pipeline_streams_hundreds_of_megabytes_in_bounded_memory(tmp_path):
    source = tmp_path / "large.jsonl"
    lines, duplicates = _write_large_corpus(source, FILE_MIB * 2**20)
    command = [sys.executable, "-c", _MEASURE, "pipeline", str(source), str(tmp_path / "out.jsonl"),
               "--no-progress", "--max-repeated-ngram-share", "off", "--num-perm", "16"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["rc"] == 0
    assert re.search(rf"^read\s+{lines}$", result.stdout, re.MULTILINE)
    assert re.search(rf"^kept\s+{lines - duplicates}\s", result.stdout, re.MULTILINE)
    assert re.search(rf"^\s+exact_dup\s+{duplicates}$", result.stdout, re.MULTILINE)
    # the child's own baseline: interpreter, numpy, the data modules (no torch model), not the parent's
    assert measured["base_kib"] < BASE_BOUND_MIB * 1024, f"baseline {measured['base_kib'] / 1024:.0f} MiB"
    growth_mib = (measured["peak_kib"] - measured["base_kib"]) / 1024
    # loading the file would take more than FILE_MIB; streaming holds one record at a time plus
    # the dedup tables (16 to 32 bytes per kept document, and per band for near duplicates)
    assert growth_mib < GROWTH_BOUND_MIB, f"RSS grew by {growth_mib:.0f} MiB streaming {FILE_MIB} MiB"


def test_dirty_sample_is_deterministic_by_seed(tmp_path):
    first = write_dirty_sample(tmp_path / "a.jsonl", "sft", clean_rows=300, seed=5)
    second = write_dirty_sample(tmp_path / "b.jsonl", "sft", clean_rows=300, seed=5)
    write_dirty_sample(tmp_path / "c.jsonl", "sft", clean_rows=300, seed=6)
    assert first == second
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert set(first) == {"clean", "broken_json", *SFT_DIRT}


def test_dirty_conversations_are_caught_by_the_structure_filters(tmp_path):
    counts = write_dirty_sample(tmp_path / "sft.jsonl", "sft", clean_rows=600, seed=2)
    filters = [F.conversation_format_filter(), F.role_order_filter(), F.script_filter(0.9, ["han", "latin"]),
               F.markup_filter(0.1), F.ExactDeduplicator()]
    run(tmp_path / "sft.jsonl", tmp_path / "clean.jsonl", filters, skip_bad=True, dropped_path=tmp_path / "dropped.jsonl")
    fate = {}
    for row in _lines(tmp_path / "dropped.jsonl"):
        if row["record"]:
            fate.setdefault(row["record"]["dirt"], Counter())[row["filter"]] += 1
    assert fate["empty_conversation"] == Counter({"conversation_format": counts["empty_conversation"]})
    assert fate["empty_message"] == Counter({"conversation_format": counts["empty_message"]})
    assert fate["role_order"] == Counter({"role_order": counts["role_order"]})
    assert fate["foreign_script"] == Counter({"script": counts["foreign_script"]})
    assert fate["markup"] == Counter({"markup": counts["markup"]})
    assert fate["exact_dup"] == Counter({"exact_dup": counts["exact_dup"]})
    kept = _lines(tmp_path / "clean.jsonl")
    assert all(F.role_order_problem(row["conversations"]) is None for row in kept)


def test_unknown_script_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["clean", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), "--scripts", "klingon"])
    assert "unknown script 'klingon'" in capsys.readouterr().err


def test_stats_stops_at_a_bad_line_unless_told_to_skip_and_count_it(tmp_path, capsys):
    from minimind.data.stats import collect_stats

    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "abc"}\n{"text": \n{"messages": []}\n{"text": "de"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=":2: invalid JSON"):
        collect_stats(path)
    report = collect_stats(path, skip_bad=True)
    assert report.count == 2 and len(report.skipped) == 2
    assert ":3: not a MiniMind record" in report.skipped[1]
    assert main(["stats", str(path), "--skip-bad"]) == 0
    assert "skipped 2 malformed line(s)" in capsys.readouterr().out
