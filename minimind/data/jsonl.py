"""Streaming jsonl reading with schema checks and errors that name the file and the line.

Reads upstream MiniMind's files unchanged (`pretrain_hq.jsonl`, `sft_*.jsonl`, `dpo.jsonl`,
`r1_mix_1024.jsonl`) as well as the book's synthetic ones. One line is held in memory at a
time, so multi-gigabyte corpora stream in bounded memory.

Schemas (extra keys such as `reasoning_content` are allowed everywhere):

- ``"pretrain"``: ``{"text": str}`` (non-empty)
- ``"sft"``: ``{"conversations": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]}``
  (non-empty); tool use as upstream's SFT data writes it: the first system message may carry
  ``"tools"`` (the signatures, a list or a JSON string), an assistant message ``"tool_calls"``
  (then its content may be null)
- ``"dpo"``: ``{"chosen": [messages], "rejected": [messages]}``, each a valid conversation
  (`check_preference_pair` adds what DPO training needs: one prompt, two different replies)
- ``None``: any JSON object

Bad lines (invalid JSON, not UTF-8, a missing field, a wrong type, an unknown role, an empty
conversation) raise :class:`DataError` ``"{path}:{line}: {reason}"``. With ``skip_bad=True``
they are skipped instead; every skip is counted in a :class:`JsonlReport` (pass your own to
read the count) and, when the file has been read to its end, one ``UserWarning`` states how
many lines were skipped, so skipping is never silent. Blank lines are ignored.
"""
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from minimind.tokenizer import CHAT_ROLES, check_messages, tools_of

SCHEMAS = (None, "pretrain", "sft", "dpo")


class DataError(ValueError):
    """A malformed input line; the message starts with ``path:line:``."""


def json_problem(error: json.JSONDecodeError) -> str:
    """'invalid JSON (Unterminated string starting at column 7)': the decoder's own message, some
    of which end in "at" ("Invalid control character at"), with the column of the line."""
    return f"invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno})"


@dataclass
class JsonlReport:
    """What one pass of :func:`read_jsonl` saw: rows yielded, lines skipped, why (first few), and
    the line number of the row it yielded last (so a later check of that row can name its line)."""

    path: str = ""
    rows: int = 0
    line: int = 0
    skipped: int = 0
    first_errors: list = field(default_factory=list)

    def record_skip(self, message: str, keep: int = 5) -> None:
        self.skipped += 1
        if len(self.first_errors) < keep:
            self.first_errors.append(message)


def check_conversation(messages, what: str = "conversations") -> None:
    """Raise ValueError (without location) unless `messages` is a non-empty list of
    ``{"role": known role, "content": str}`` dicts (an assistant's content may be null when it
    makes tool calls), whose tool fields the chat template can render."""
    if not isinstance(messages, list):
        raise ValueError(f"{what!r} must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise ValueError(f"{what!r} is an empty conversation")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"{what}[{i}] must be an object, got {type(message).__name__}")
        calls = message.get("role") == "assistant" and bool(message.get("tool_calls"))
        for key in ("role", "content")[:1 if calls else 2]:
            if key not in message:
                raise ValueError(f"{what}[{i}] is missing field {key!r}")
        role, content = message["role"], message.get("content")
        if role not in CHAT_ROLES:
            raise ValueError(f"{what}[{i}] has unknown role {role!r} (expected one of {', '.join(CHAT_ROLES)})")
        if not isinstance(content, str) and not (calls and content is None):
            raise ValueError(f"{what}[{i}].content must be a string, got {type(content).__name__}")
    check_messages(messages, what)  # the tool fields: calls with a name and arguments, …
    tools_of(messages)


def check_row(row, schema: Optional[str]) -> None:
    """Raise ValueError (without location) unless `row` fits `schema`."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if schema is None:
        return
    if schema == "pretrain":
        if "text" not in row:
            raise ValueError("missing field 'text'")
        if not isinstance(row["text"], str):
            raise ValueError(f"field 'text' must be a string, got {type(row['text']).__name__}")
        if not row["text"]:
            raise ValueError("field 'text' is empty")
    elif schema == "sft":
        if "conversations" not in row:
            raise ValueError("missing field 'conversations'")
        check_conversation(row["conversations"], "conversations")
    elif schema == "dpo":
        for key in ("chosen", "rejected"):
            if key not in row:
                raise ValueError(f"missing field {key!r}")
            check_conversation(row[key], key)
    else:
        raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")


def _prompt_and_reply(messages: list, what: str) -> tuple[list, dict]:
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"the last message of {what!r} must be the assistant's reply, got role {messages[-1]['role']!r}")
    return messages[:-1], messages[-1]


def check_preference_pair(row: dict) -> None:
    """Raise ValueError (without location) unless a "dpo" row is a usable preference pair: the same
    prompt (every message before the last), then two different, non-empty assistant replies."""
    chosen_prompt, chosen_reply = _prompt_and_reply(row["chosen"], "chosen")
    rejected_prompt, rejected_reply = _prompt_and_reply(row["rejected"], "rejected")
    if chosen_prompt != rejected_prompt:
        raise ValueError("chosen and rejected must share the prompt (every message before the last reply)")
    if _reply_of(chosen_reply) == _reply_of(rejected_reply):
        raise ValueError("chosen and rejected replies are identical: the pair expresses no preference")
    if not _reply_of(chosen_reply).strip() or not _reply_of(rejected_reply).strip():
        raise ValueError("a reply is empty")


def _reply_of(message: dict) -> str:
    """What an assistant message says: its text and its tool calls."""
    calls = message.get("tool_calls")
    return (message.get("content") or "") + (json.dumps(calls, ensure_ascii=False) if calls else "")


def read_jsonl(path, schema: Optional[str] = None, skip_bad: bool = False,
               report: Optional[JsonlReport] = None) -> Iterator[dict]:
    """Yield one dict per non-blank line of `path`, validated against `schema`.

    Raises DataError("path:line: reason") on the first bad line, or with `skip_bad=True`
    skips it, counts it in `report` and warns once with the total at the end of the file.
    """
    if schema not in SCHEMAS:  # checked now, not at the first next()
        raise ValueError(f"unknown schema {schema!r}; expected one of {SCHEMAS}")
    report = report if report is not None else JsonlReport()
    return _read_lines(Path(path), schema, skip_bad, report)


def _read_lines(path: Path, schema: Optional[str], skip_bad: bool, report: JsonlReport) -> Iterator[dict]:
    report.path = str(path)
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problem = f"not valid UTF-8 (byte {error.start}: {raw[error.start:error.start + 1]!r})"
            else:
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                    check_row(row, schema)
                    problem = None
                except json.JSONDecodeError as error:
                    problem = json_problem(error)
                except ValueError as error:
                    problem = str(error)
            if problem is not None:
                message = f"{path}:{line_number}: {problem}"
                if not skip_bad:
                    raise DataError(message)
                report.record_skip(message)
                continue
            report.rows += 1
            report.line = line_number
            yield row
    if report.skipped:
        warnings.warn(
            f"{path}: skipped {report.skipped} bad line(s) of {report.rows + report.skipped}; "
            f"first: {report.first_errors[0]}",
            UserWarning,
            stacklevel=2,
        )


def texts_from_jsonl(path, max_docs: int = 0) -> Iterable[str]:
    """The text of each row of a jsonl file, for training a tokenizer: `text` of pretraining rows,
    the message contents of SFT rows joined by newlines; at most `max_docs` rows (0 = all)."""
    for count, row in enumerate(read_jsonl(path), start=1):
        if isinstance(row.get("text"), str):
            yield row["text"]
        elif isinstance(row.get("conversations"), list):
            yield "\n".join(str(m.get("content", "")) for m in row["conversations"] if isinstance(m, dict))
        else:
            raise DataError(f"{path}:{count}: neither a 'text' nor a 'conversations' field")
        if max_docs and count >= max_docs:
            return
