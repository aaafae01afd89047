"""Streaming readers and writers for corpora larger than memory: one record at a time.

Formats, chosen by file name: `.jsonl` (one JSON object per line), `.txt` (one document per
line, or per blank-line-separated paragraph), `.parquet` (read in row batches; pyarrow is
imported only here), each optionally gzip-compressed (`.jsonl.gz`, `.txt.gz`). Readers yield
`(location, record)` pairs, where the location is the 1-based line number of the record (its
row number for parquet), so every later error can name `path:line`. Writers write to a
temporary file next to the target and rename it into place only when the writer closes
without an error, so an interrupted run never leaves a half-written file behind; every record
they accept reads back equal, and one they could not hold is refused.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator

from minimind.data.jsonl import DataError, json_problem

JSONL, TEXT, PARQUET = "jsonl", "text", "parquet"
TEXT_UNITS = ("line", "paragraph")
# Rows per batch when reading or writing parquet: large enough to amortise pyarrow's per-batch
# cost, small enough that a batch of long documents stays a few MB.
PARQUET_BATCH_ROWS = 2048


def detect_format(path) -> str:
    """The format of `path` from its name: 'jsonl', 'text' or 'parquet' (a `.gz` suffix is allowed)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".jsonl"):
        return JSONL
    if name.endswith(".txt"):
        return TEXT
    if name.endswith(".parquet"):
        if Path(path).name.lower().endswith(".gz"):
            raise DataError(f"{path}: parquet compresses its own pages; a .parquet.gz file is not supported")
        return PARQUET
    if name.endswith(".json"):
        raise DataError(f"{path}: a .json file holds one JSON document and cannot be streamed; "
                        "convert it to .jsonl (one object per line) first")
    raise DataError(f"{path}: unknown file type; use .jsonl, .txt or .parquet (optionally .gz)")


def _progress_bar(path, enabled: bool, desc: str | None):
    from tqdm.auto import tqdm

    total = os.path.getsize(path)
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc or Path(path).name, disable=not enabled, leave=False)


def _open_binary(path):
    """(line iterator over the decompressed bytes, the raw file whose tell() is the progress)."""
    raw = open(path, "rb")
    if str(path).lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    return raw, raw


def _iter_lines(path, progress: bool, desc: str | None) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line) for each line, updating a byte progress bar as it goes."""
    stream, raw = _open_binary(path)
    with raw, stream, _progress_bar(path, progress, desc) as bar:
        shown = line_number = 0
        try:
            for line_number, line in enumerate(stream, start=1):
                if line_number == 1 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                    line = line[3:]
                yield line_number, line
                if progress and line_number % 1024 == 0:
                    position = raw.tell()
                    bar.update(position - shown)
                    shown = position
        except (OSError, EOFError, zlib.error) as error:  # a damaged or truncated .gz file
            raise DataError(f"{path}:{line_number + 1}: the data cannot be read ({error})") from None
        bar.update(os.path.getsize(path) - shown)


def _decode(path, line_number: int, line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}:{line_number}: not valid UTF-8 (byte {error.start})") from None


def _jsonl_records(path, progress, desc) -> Iterator[tuple[int, dict | DataError]]:
    for line_number, line in _iter_lines(path, progress, desc):
        if not line.strip():
            continue  # a blank line holds no record
        try:
            record = json.loads(_decode(path, line_number, line))
        except DataError as error:
            yield line_number, error
            continue
        except json.JSONDecodeError as error:
            yield line_number, DataError(f"{path}:{line_number}: {json_problem(error)}")
            continue
        if not isinstance(record, dict):
            yield line_number, DataError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            continue
        yield line_number, record


def _text_records(path, unit, progress, desc) -> Iterator[tuple[int, dict | DataError]]:
    if unit not in TEXT_UNITS:
        raise ValueError(f"text_unit must be one of {TEXT_UNITS}, got {unit!r}")
    paragraph: list[str] = []
    start = 0
    for line_number, line in _iter_lines(path, progress, desc):
        try:
            text = _decode(path, line_number, line).rstrip("\r\n")
        except DataError as error:
            yield line_number, error
            continue
        if unit == "line":
            if text.strip():
                yield line_number, {"text": text}
            continue
        if text.strip():
            if not paragraph:
                start = line_number
            paragraph.append(text)
        elif paragraph:
            yield start, {"text": "\n".join(paragraph)}
            paragraph = []
    if paragraph:
        yield start, {"text": "\n".join(paragraph)}


def _parquet_records(path, progress, desc) -> Iterator[tuple[int, dict | DataError]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: not a readable parquet file ({error})") from None
    total_rows = parquet.metadata.num_rows
    size = os.path.getsize(path)
    with _progress_bar(path, progress, desc) as bar:
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for record in batch.to_pylist():
                    row += 1
                    yield row, record
                bar.update(int(size * row / max(total_rows, 1)) - bar.n)
        except (pa.ArrowException, OSError) as error:
            raise DataError(f"{path}: rows after {row} cannot be read ({error})") from None


def iter_records(path, *, text_unit: str = "line", on_bad: Callable[[int, DataError], None] | None = None,
                 progress: bool = False, desc: str | None = None) -> Iterator[tuple[int, dict]]:
    """Yield `(line, record)` for every record of `path`, holding one record in memory at a time.

    A text file gives `{"text": …}` records, one per non-blank line (`text_unit="line"`) or per
    blank-line-separated paragraph (`"paragraph"`, the location is the paragraph's first line).
    Blank lines in jsonl files are skipped: they hold no record. A malformed line (invalid
    JSON or UTF-8, or JSON that is not an object) raises `DataError("path:line: reason")`; with
    `on_bad` it is passed to `on_bad(line, error)` instead and reading goes on.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    kind = detect_format(path)
    if kind == JSONL:
        source = _jsonl_records(path, progress, desc)
    elif kind == TEXT:
        source = _text_records(path, text_unit, progress, desc)
    else:
        source = _parquet_records(path, progress, desc)
    for location, item in source:
        if isinstance(item, DataError):
            if on_bad is None:
                raise item
            on_bad(location, item)
            continue
        yield location, item


class RecordWriter:
    """Write records to `path` (format from its name), atomically (`minimind.files.atomic_output`):
    the file appears when the `with` block ends without an exception, and nothing is left when
    it ends with one.

    Every record reads back equal to what was written, or the write is refused with a
    `DataError` naming the record. jsonl keeps every field (UTF-8, not ASCII-escaped, as
    MiniMind's own files; a string that UTF-8 cannot hold, such as a lone surrogate, is
    \\u-escaped). A text file takes records with a `text` field, one per line
    (`text_unit="line"`, the text must not contain a newline) or per paragraph (`"paragraph"`,
    the text must not contain an empty line). Parquet has one set of columns for the whole file:
    every record must have the same fields as the first (a missing one would read back as
    null), and nested values must survive the round trip (messages that differ in their
    optional fields do not); write jsonl for such records.
    """

    def __init__(self, path, *, text_unit: str = "line"):
        self.path = Path(path)
        self.kind = detect_format(self.path)
        if text_unit not in TEXT_UNITS:
            raise ValueError(f"text_unit must be one of {TEXT_UNITS}, got {text_unit!r}")
        self.text_unit = text_unit
        self.count = 0
        self._output = None  # the atomic_output context while the `with` block runs
        self._temp_path: Path | None = None
        self._file = None
        self._raw = None
        self._parquet_writer = None
        self._parquet_rows: list[dict] = []

    def __enter__(self) -> "RecordWriter":
        from minimind.files import atomic_output

        self._output = atomic_output(self.path)
        self._temp_path = self._output.__enter__()
        if self.kind in (JSONL, TEXT):
            self._raw = open(self._temp_path, "wb")
            # mtime=0 makes gzip output depend only on the records written.
            gzipped = self.path.name.lower().endswith(".gz")
            self._file = gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0) if gzipped else self._raw
        return self

    def write(self, record: dict) -> None:
        if self._temp_path is None:
            raise RuntimeError("RecordWriter.write called outside its `with` block")
        if self.kind == JSONL:
            self._file.write(self._json_line(record))
        elif self.kind == TEXT:
            self._file.write(self._text_line(record).encode("utf-8"))
        else:
            self._parquet_rows.append(record)
            if len(self._parquet_rows) >= PARQUET_BATCH_ROWS:
                self._flush_parquet()
        self.count += 1

    @staticmethod
    def _json_line(record: dict) -> bytes:
        try:
            return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        except UnicodeEncodeError:  # a lone surrogate: only the escaped form holds it
            return json.dumps(record, ensure_ascii=True).encode("ascii") + b"\n"

    def _text_line(self, record: dict) -> str:
        text = record.get("text")
        where = f"{self.path}: record {self.count + 1}"
        if not isinstance(text, str):
            raise DataError(f"{where}: a text file needs a string 'text' field; write .jsonl for other records")
        if self.text_unit == "line":
            if "\n" in text or "\r" in text:
                raise DataError(f"{where}: the text holds a newline, which one-document-per-line text "
                                "cannot represent; write .jsonl, or use paragraph units")
            return text + "\n"
        if any(not line.strip() for line in text.split("\n")):
            raise DataError(f"{where}: the text holds an empty line, which paragraph units cannot represent")
        return ("\n" if self.count else "") + text + "\n"

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._parquet_rows
        if not rows:
            return
        first_row = self.count - len(rows) + 1
        columns = self._parquet_writer.schema.names if self._parquet_writer is not None else list(rows[0])
        for number, record in enumerate(rows, start=first_row):
            if set(record) != set(columns):
                raise DataError(f"{self.path}: record {number} has fields {sorted(record)} but the file's records have "
                                f"{sorted(columns)}; parquet holds one set of fields per file (a missing one would "
                                "read back as null): write .jsonl")
        try:
            schema = self._parquet_writer.schema if self._parquet_writer is not None else None
            table = pa.Table.from_pylist(rows, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise DataError(f"{self.path}: records {first_row}..{self.count} do not fit one parquet schema "
                            f"({error}); write .jsonl instead") from None
        for number, (record, read_back) in enumerate(zip(rows, table.to_pylist()), start=first_row):
            if record != read_back:
                raise DataError(f"{self.path}: record {number} would not read back as written from parquet "
                                f"(it reads {_shorten(read_back)}); nested values that differ in their fields "
                                "or types need .jsonl")
        if self._parquet_writer is None:
            self._parquet_writer = pq.ParquetWriter(str(self._temp_path), table.schema)
        self._parquet_writer.write_table(table)
        self._parquet_rows = []

    def _close(self, succeeded: bool) -> None:
        if self.kind == PARQUET:
            if succeeded:
                self._flush_parquet()
                if self._parquet_writer is None:  # no records: still a valid, empty file
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    pq.write_table(pa.table({}), str(self._temp_path))
            if self._parquet_writer is not None:
                self._parquet_writer.close()
        else:
            self._file.close()
            if self._raw is not self._file:
                self._raw.close()

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self._close(succeeded=exc_type is None)
        except BaseException as error:
            self._output.__exit__(type(error), error, error.__traceback__)
            raise
        finally:
            self._temp_path = None
        self._output.__exit__(exc_type, exc, traceback)


def _shorten(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def write_records(path, records, *, text_unit: str = "line") -> int:
    """Write an iterable of records to `path` atomically; returns how many were written."""
    with RecordWriter(path, text_unit=text_unit) as writer:
        for record in records:
            writer.write(record)
    return writer.count


