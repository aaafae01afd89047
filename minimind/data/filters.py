"""Small composable filters that decide which records of a corpus to keep, each with its threshold.

A filter has a `name` (the column of the summary that counts what it dropped), a
`description` (its threshold, in words) and `check(sample)`, which returns None to keep the
sample or a short reason to drop it. A `Sample` wraps one record and computes its text once.
The measures behind the filters (`script_share`, `symbol_share`, `markup_share`,
`repeated_line_share`, `repeated_ngram_share`) are plain functions of a string, so they can be
tested, plotted and reused on their own. Exact and near deduplication are filters too: they
remember what they have kept, in compact numpy hash tables (16 to 32 bytes a key), so memory
grows with the number of distinct records, not with their size.
"""
from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from minimind.tokenizer import ROLES

_POLY = np.uint64(0x100000001B3)  # odd multiplier of the polynomial rolling hashes (FNV's prime)

# --------------------------------------------------------------------------------------------
# What text a record holds


class RecordError(ValueError):
    """A record that has no text a filter can measure (the pipeline adds file and line)."""


def _message_text(message) -> list[str]:
    if not isinstance(message, dict):
        raise RecordError(f"a message is {type(message).__name__}, not an object")
    parts = []
    for field in ("reasoning_content", "content"):
        value = message.get(field)
        if value is not None and not isinstance(value, str):
            raise RecordError(f"message field {field!r} is {type(value).__name__}, not a string")
        if value:
            parts.append(value)
    return parts


def _messages_text(messages) -> list[str]:
    if not isinstance(messages, list):
        raise RecordError(f"a conversation is {type(messages).__name__}, not a list")
    return [part for message in messages for part in _message_text(message)]


def record_text(record: dict) -> str:
    """The text of a record, as the filters measure it: `text` for pretraining records; every
    message's content joined by newlines for a conversation (`conversations`, or OpenAI's
    `messages`); for a preference pair, the shared prompt once, then both replies."""
    if "text" in record:
        if not isinstance(record["text"], str):
            raise RecordError(f"'text' is {type(record['text']).__name__}, not a string")
        return record["text"]
    for field in ("conversations", "messages"):
        if field in record:
            return "\n".join(_messages_text(record[field]))
    if "chosen" in record and "rejected" in record:
        chosen, rejected = record["chosen"], record["rejected"]
        if isinstance(chosen, str) and isinstance(rejected, str):
            prompt = record.get("prompt", "")
            return "\n".join(part for part in (prompt, chosen, rejected) if part)
        chosen_parts, rejected_parts = _messages_text(chosen), _messages_text(rejected)
        shared = 0
        while shared < min(len(chosen_parts), len(rejected_parts)) and chosen_parts[shared] == rejected_parts[shared]:
            shared += 1
        return "\n".join(chosen_parts + rejected_parts[shared:])
    raise RecordError("the record has none of the fields 'text', 'conversations', 'messages', 'chosen'+'rejected'")


def record_texts(record: dict) -> list[str]:
    """The texts of a record to judge one by one: for a preference pair, the chosen and the
    rejected conversation separately (they share most of their words, so measured together
    every pair would look repetitive); for any other record, `[record_text(record)]`."""
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if "text" not in record and isinstance(chosen, list) and isinstance(rejected, list):
        return ["\n".join(_messages_text(chosen)), "\n".join(_messages_text(rejected))]
    return [record_text(record)]


def dedup_text(record: dict) -> str:
    """The text deduplication compares: `record_text`, except that a conversation's system
    message is left out — many rows share one system prompt, which would make unrelated short
    exchanges look alike (and, for the exact check, make equal exchanges look different)."""
    for field in ("conversations", "messages"):
        messages = record.get(field)
        if isinstance(messages, list):
            return "\n".join(_messages_text([m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]))
    return record_text(record)


class Sample:
    """One record on its way through the filters; its texts are computed once, on first use."""

    __slots__ = ("record", "location", "_text", "_texts", "_dedup_text")

    def __init__(self, record: dict, location: int = 0):
        self.record = record
        self.location = location  # the line the record came from, for "duplicate of line N"
        self._text: str | None = None
        self._texts: list[str] | None = None
        self._dedup_text: str | None = None

    @property
    def text(self) -> str:
        """All the record's text (`record_text`)."""
        if self._text is None:
            self._text = record_text(self.record)
        return self._text

    @property
    def texts(self) -> list[str]:
        """The record's texts to judge one by one (`record_texts`)."""
        if self._texts is None:
            self._texts = record_texts(self.record)
        return self._texts

    @property
    def dedup_text(self) -> str:
        """The text deduplication compares (`dedup_text`)."""
        if self._dedup_text is None:
            self._dedup_text = dedup_text(self.record)
        return self._dedup_text


class Filter(Protocol):
    name: str
    description: str

    def check(self, sample: Sample) -> str | None: ...


@dataclass(frozen=True)
class FunctionFilter:
    """A stateless filter made of a name, a description of its threshold and a check function."""

    name: str
    description: str
    check: Callable[[Sample], str | None]


# --------------------------------------------------------------------------------------------
# Measures: plain functions of a string

# Character ranges of the scripts a corpus filter is asked about. "han" is the Chinese
# characters (CJK Unified Ideographs and their extensions); "cjk" is accepted as its alias.
SCRIPTS = {
    "han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f",
    "latin": "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff",
    "cyrillic": "\u0400-\u052f",
    "greek": "\u0370-\u03ff\u1f00-\u1fff",
    "arabic": "\u0600-\u06ff\u0750-\u077f",
    "devanagari": "\u0900-\u097f",
    "thai": "\u0e00-\u0e7f",
    "kana": "\u3040-\u30ff\u31f0-\u31ff",
    "hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
}
SCRIPT_ALIASES = {"cjk": "han", "chinese": "han", "zh": "han", "en": "latin"}
# A letter is a character for which `str.isalpha()` is true. Digits, punctuation, symbols and
# spaces belong to no script, so they neither raise nor lower a script's share. In the ranges
# above, "a word character that is neither a digit nor '_'" (the lookahead) is exactly a letter;
# the lookahead drops the combining marks, digits and signs that some script blocks also hold.
_LETTER = r"[^\W\d_]"
_SCRIPT_RES = {name: re.compile(f"(?={_LETTER})[{chars}]") for name, chars in SCRIPTS.items()}


def parse_scripts(names) -> tuple[str, ...]:
    """Canonical script names from a comma-separated string or a list ('cjk' → 'han')."""
    if isinstance(names, str):
        names = [name for name in names.split(",") if name.strip()]
    canonical = []
    for name in names:
        name = SCRIPT_ALIASES.get(name.strip().lower(), name.strip().lower())
        if name not in SCRIPTS:
            raise ValueError(f"unknown script {name!r}; known: {', '.join(sorted(SCRIPTS))} (and 'cjk' for han)")
        canonical.append(name)
    if not canonical:
        raise ValueError("no script given")
    return tuple(dict.fromkeys(canonical))


def _count(pattern: re.Pattern, text: str) -> int:
    return len(text) - len(pattern.sub("", text))


def letter_count(text: str) -> int:
    """How many characters of `text` are letters (`str.isalpha`)."""
    return sum(map(str.isalpha, text))


def script_counts(text: str) -> dict[str, int]:
    """How many letters of `text` belong to each known script."""
    return {name: _count(pattern, text) for name, pattern in _SCRIPT_RES.items()}


def script_share(text: str, scripts=("han",)) -> float:
    """Share of the letters of `text` that belong to `scripts` (0.0 for text without letters).

    share = (letters in the scripts) / (all letters); digits, punctuation and spaces are not letters.
    """
    letters = letter_count(text)
    if letters == 0:
        return 0.0
    return sum(_count(_SCRIPT_RES[name], text) for name in parse_scripts(scripts)) / letters


def cjk_share(text: str) -> float:
    """Share of the letters of `text` that are Chinese (Han) characters, as upstream's
    "中文字符占比" filter measures it."""
    return script_share(text, ("han",))


def dominant_script(text: str, min_share: float = 0.8) -> str:
    """The script holding at least `min_share` of the letters, 'mixed' if none does, 'none'
    for text without letters. The stats report calls this the language mix."""
    letters = letter_count(text)
    if letters == 0:
        return "none"
    name, count = max(script_counts(text).items(), key=lambda item: item[1])
    return name if count / letters >= min_share else "mixed"


# Symbols that are rare in prose but common in scraped junk: ASCII symbols other than ordinary
# punctuation and the math and markdown signs (= < > + - * / ^ are fine in arithmetic and in
# reasoning tags), arrows/box drawing/dingbats, private-use characters, the replacement
# character left by broken decoding, control characters, emoji.
_NOISE_RE = re.compile(
    "[#$%&@\\[\\\\\\]_`{|}~"
    "\u2190-\u2bff"
    "\ue000-\uf8ff"
    "\ufffd"
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f"
    "\U0001f000-\U0001faff]"
)
_SPACE_RE = re.compile(r"\s")


def symbol_share(text: str) -> float:
    """Share of the non-space characters of `text` that are symbol noise (see `_NOISE_RE`)."""
    visible = len(text) - _count(_SPACE_RE, text)
    if visible == 0:
        return 0.0
    return _count(_NOISE_RE, text) / visible


# Tags the book's own formats use are content, not markup.
_KEPT_TAGS = "think|answer|tool_call|tool_response"
_MARKUP_RE = re.compile(
    rf"</?(?!(?:{_KEPT_TAGS})\b)[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>"  # HTML/XML tags
    r"|&(?:[A-Za-z]{2,8}|#\d{1,6}|#x[0-9A-Fa-f]{1,6});"                  # entities: &nbsp; &#39;
    r"|(?:https?|ftp)://\S+|www\.\S+"                                     # URLs
)


def markup_share(text: str) -> float:
    """Share of the characters of `text` inside HTML/XML tags, HTML entities and URLs
    (`<think>`, `<answer>` and the tool tags are not counted: they are the book's own format)."""
    if not text or not ("<" in text or "&" in text or "://" in text or "www." in text):
        return 0.0  # nothing any markup pattern could match: skip the regex scan
    return sum(len(match) for match in _MARKUP_RE.findall(text)) / len(text)


def repeated_line_share(text: str) -> float:
    """Share of the characters of the non-empty lines that repeat an earlier line of the same text
    (boilerplate such as "Click to subscribe" pasted into every paragraph)."""
    seen: set[str] = set()
    repeated = total = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        total += len(line)
        if line in seen:
            repeated += len(line)
        else:
            seen.add(line)
    return repeated / total if total else 0.0


# A unit for n-grams: one Han/kana/hangul character (those scripts do not separate words with
# spaces), or one run of other letters and digits (a word, in space-separated scripts).
_IDEOGRAPHS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_UNIT_RE = re.compile(f"[{_IDEOGRAPHS}]|[^\\W_{_IDEOGRAPHS}]+")


def text_units(text: str) -> list[str]:
    """The units n-gram measures count: Chinese characters one by one, other words whole, lowercased."""
    return _UNIT_RE.findall(text.lower())


def repeated_ngram_share(text: str, n: int = 5) -> float:
    """Share of the units of `text` covered by an n-gram of units that occurs more than once in it.

    Natural text repeats few 5-grams; "哈哈哈哈哈哈", "the best the best the best…" and
    templated spam repeat almost all of them. (Gopher's "duplicate n-gram fraction", counted in
    units — words, or single Chinese characters — instead of characters.)
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    units = text_units(text)
    if len(units) <= n:
        return 0.0
    # one integer per distinct unit (the first serial it met), mapped in C rather than a Python loop
    first_seen: dict[str, int] = {}
    ids = np.fromiter(map(first_seen.setdefault, units, itertools.count()), dtype=np.uint64, count=len(units))
    count = len(ids) - n + 1
    grams = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(n):  # one 64-bit polynomial hash per n-gram
            grams = grams * _POLY + ids[offset:offset + count] + np.uint64(1)
    _, inverse, counts = np.unique(grams, return_inverse=True, return_counts=True)
    repeated = (counts[inverse] > 1).astype(np.int64)  # (count,): the n-gram starting here repeats
    # unit i is covered when a repeated n-gram starts at any of i-n+1 .. i
    covered = np.convolve(repeated, np.ones(n, dtype=np.int64))[: len(ids)] > 0
    return float(covered.mean())


# --------------------------------------------------------------------------------------------
# Conversations: structure and role order

# The roles MiniMind's conversations use (the same tuple the jsonl schemas check): a user asks,
# the assistant answers; an optional system message comes first.
_NEXT_ROLES = {"user": "assistant", "assistant": "user"}


def conversation_problem(messages) -> str | None:
    """What is malformed about a conversation, or None: it must be a non-empty list of objects,
    each with a known `role` (system, user, assistant) and a non-empty string `content`."""
    if not isinstance(messages, list):
        return f"conversation is {type(messages).__name__}, not a list"
    if not messages:
        return "empty conversation"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"message {index} is {type(message).__name__}, not an object"
        role = message.get("role")
        if role not in ROLES:
            return f"message {index} has role {role!r}, not one of {', '.join(ROLES)}"
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            return f"message {index} content is {type(content).__name__}, not a string"
        if not (content or "").strip():
            return f"message {index} ({role}) is empty"
    return None


def role_order_problem(messages) -> str | None:
    """What is wrong with the order of roles, or None: an optional system message first, then a
    user turn, answers and questions alternating, and an
    assistant turn last — the only shape whose reply a model can be trained on. Assumes
    `conversation_problem(messages)` is None."""
    roles = [message["role"] for message in messages]
    start = 1 if roles[0] == "system" else 0
    if "system" in roles[start:]:
        return f"system message at position {roles.index('system', start)}, not first"
    if start == len(roles):
        return "only a system message"
    if roles[start] != "user":
        return f"first turn is {roles[start]}, not user"
    for index in range(start + 1, len(roles)):
        if roles[index] != _NEXT_ROLES[roles[index - 1]]:
            return f"{roles[index - 1]} followed by {roles[index]} at position {index}"
    if roles[-1] != "assistant":
        return f"last turn is {roles[-1]}, not assistant"
    return None


def _conversations_of(record: dict) -> list:
    """The conversations a record holds: one for SFT, two (chosen, rejected) for preference pairs."""
    if "conversations" in record:
        return [record["conversations"]]
    if "messages" in record:
        return [record["messages"]]
    if "chosen" in record and "rejected" in record and not isinstance(record["chosen"], str):
        return [record["chosen"], record["rejected"]]
    return []


def conversation_format_filter() -> FunctionFilter:
    """Drop conversations that are empty or malformed (pretraining records pass untouched)."""
    def check(sample: Sample) -> str | None:
        for messages in _conversations_of(sample.record):
            problem = conversation_problem(messages)
            if problem:
                return problem
        return None
    return FunctionFilter("conversation_format", "non-empty list of {role, content} messages", check)


def role_order_filter() -> FunctionFilter:
    """Drop conversations whose roles are out of order (see `role_order_problem`)."""
    def check(sample: Sample) -> str | None:
        for messages in _conversations_of(sample.record):
            problem = conversation_problem(messages) or role_order_problem(messages)
            if problem:
                return problem
        return None
    return FunctionFilter("role_order", "[system] user assistant (user assistant)…", check)


def preference_pair_filter() -> FunctionFilter:
    """Drop preference pairs whose two conversations do not share the prompt or do not differ in
    the reply (a pair with nothing to prefer teaches DPO nothing)."""
    def check(sample: Sample) -> str | None:
        record = sample.record
        if not ("chosen" in record and "rejected" in record) or isinstance(record["chosen"], str):
            return None
        chosen, rejected = record["chosen"], record["rejected"]
        if chosen[:-1] != rejected[:-1]:
            return "chosen and rejected have different prompts"
        if chosen[-1].get("content") == rejected[-1].get("content"):
            return "chosen and rejected replies are identical"
        return None
    return FunctionFilter("preference_pair", "same prompt, different replies", check)


# --------------------------------------------------------------------------------------------
# Threshold filters on the text


def _range_description(unit: str, low, high) -> str:
    if low is not None and high is not None:
        return f"{low} <= {unit} <= {high}"
    return f"{unit} >= {low}" if low is not None else f"{unit} <= {high}"


def length_filter(min_chars: int | None = None, max_chars: int | None = None) -> FunctionFilter:
    """Keep texts with `min_chars <= length <= max_chars` characters (surrounding whitespace not
    counted). Upstream kept pretraining texts under 512 characters: `max_chars=511`."""
    if min_chars is None and max_chars is None:
        raise ValueError("length_filter needs min_chars or max_chars")
    low, high = min_chars or 0, max_chars if max_chars is not None else float("inf")

    def check(sample: Sample) -> str | None:
        length = len(sample.text.strip())
        if length < low:
            return f"{length} chars < {low}"
        if length > high:
            return f"{length} chars > {high}"
        return None
    return FunctionFilter("chars", _range_description("chars", min_chars, max_chars), check)


def token_length_filter(count_tokens: Callable[[dict], int], min_tokens: int | None = None,
                        max_tokens: int | None = None) -> FunctionFilter:
    """Keep records with `min_tokens <= count_tokens(record) <= max_tokens`. Pass
    `minimind.data.stats.RecordLength(tokenizer)` to count what training sees (BOS and EOS
    around a text, the whole chat template around a conversation)."""
    if min_tokens is None and max_tokens is None:
        raise ValueError("token_length_filter needs min_tokens or max_tokens")
    low, high = min_tokens or 0, max_tokens if max_tokens is not None else float("inf")

    def check(sample: Sample) -> str | None:
        tokens = count_tokens(sample.record)
        if tokens < low:
            return f"{tokens} tokens < {low}"
        if tokens > high:
            return f"{tokens} tokens > {high}"
        return None
    return FunctionFilter("tokens", _range_description("tokens", min_tokens, max_tokens), check)


def script_filter(min_share: float, scripts=("han",)) -> FunctionFilter:
    """Keep texts whose letters are at least `min_share` in `scripts` — upstream's "keep what
    is mostly Chinese" is `script_filter(0.5, ["han"])`; a bilingual corpus that must only lose
    foreign-script junk uses `script_filter(0.9, ["han", "latin"])`. A text without letters
    (numbers, arithmetic) has no script to judge and is kept: the other filters judge it."""
    scripts = parse_scripts(scripts)

    def check(sample: Sample) -> str | None:
        if letter_count(sample.text) == 0:
            return None
        share = script_share(sample.text, scripts)
        return None if share >= min_share else f"{'+'.join(scripts)} share {share:.2f} < {min_share}"
    return FunctionFilter("script", f"{'+'.join(scripts)} share >= {min_share}", check)


def symbol_filter(max_share: float) -> FunctionFilter:
    """Drop texts in which symbol noise exceeds `max_share` of the visible characters."""
    def check(sample: Sample) -> str | None:
        share = symbol_share(sample.text)
        return None if share <= max_share else f"symbol share {share:.2f} > {max_share}"
    return FunctionFilter("symbols", f"symbol share <= {max_share}", check)


def markup_filter(max_share: float) -> FunctionFilter:
    """Drop texts in which HTML tags, entities and URLs exceed `max_share` of the characters."""
    def check(sample: Sample) -> str | None:
        share = markup_share(sample.text)
        return None if share <= max_share else f"markup share {share:.2f} > {max_share}"
    return FunctionFilter("markup", f"markup share <= {max_share}", check)


def repeated_lines_filter(max_share: float) -> FunctionFilter:
    """Drop texts in which repeated lines exceed `max_share` of the line characters (each side
    of a preference pair judged on its own)."""
    def check(sample: Sample) -> str | None:
        share = max(repeated_line_share(text) for text in sample.texts)
        return None if share <= max_share else f"repeated-line share {share:.2f} > {max_share}"
    return FunctionFilter("repeated_lines", f"repeated-line share <= {max_share}", check)


def repeated_ngrams_filter(max_share: float, n: int = 5) -> FunctionFilter:
    """Drop texts in which units covered by repeated n-grams exceed `max_share` (each side of a
    preference pair judged on its own)."""
    def check(sample: Sample) -> str | None:
        share = max(repeated_ngram_share(text, n) for text in sample.texts)
        return None if share <= max_share else f"repeated {n}-gram share {share:.2f} > {max_share}"
    return FunctionFilter("repeated_ngrams", f"repeated {n}-gram share <= {max_share}", check)


# --------------------------------------------------------------------------------------------
# Deduplication

_MASK64 = (1 << 64) - 1
_REHASH_CHUNK = 1 << 16


class FingerprintTable:
    """A hash table from nonzero 64-bit keys to line numbers (below 2³²) in two numpy arrays, with
    linear probing, grown (doubled) when more than 3/4 full: 12 bytes a slot, 16 to 32 bytes a key
    (half as much again while it doubles) — a Python dict of ints needs about 100. Keys must
    already be well mixed (hash outputs): the low bits pick the slot."""

    MAX_LOAD = 0.75

    def __init__(self, capacity: int = 1 << 12):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two")
        self.keys = np.zeros(capacity, dtype=np.uint64)
        self.values = np.zeros(capacity, dtype=np.uint32)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _slot(self, key: int) -> int:
        """The slot holding `key`, or the empty slot where it would go."""
        mask = len(self.keys) - 1
        slot = key & mask
        keys = self.keys
        while True:
            stored = int(keys[slot])
            if stored == 0 or stored == key:
                return slot
            slot = (slot + 1) & mask

    def get(self, key: int) -> int | None:
        """The value stored for `key`, or None."""
        slot = self._slot(key)
        return int(self.values[slot]) if int(self.keys[slot]) == key else None

    def add(self, key: int, value: int) -> None:
        """Store `value` for the nonzero `key` (replacing the value it had, if any)."""
        if not 0 < key <= _MASK64:
            raise ValueError("keys must be nonzero 64-bit integers")
        if not 0 <= value < 2**32:
            raise ValueError("values must fit in 32 bits")
        slot = self._slot(key)
        is_new = int(self.keys[slot]) != key
        self.keys[slot] = key
        self.values[slot] = value
        self.size += is_new
        if self.size > self.MAX_LOAD * len(self.keys):
            self._grow()

    def _grow(self) -> None:
        old_keys, old_values = self.keys, self.values
        self.keys = np.zeros(2 * len(old_keys), dtype=np.uint64)
        self.values = np.zeros(2 * len(old_values), dtype=np.uint32)
        # Re-insert chunk by chunk: Python ints for a whole large table would cost far more
        # memory than the table itself.
        for start in range(0, len(old_keys), _REHASH_CHUNK):
            keys, values = old_keys[start:start + _REHASH_CHUNK], old_values[start:start + _REHASH_CHUNK]
            occupied = keys != 0
            for key, value in zip(keys[occupied].tolist(), values[occupied].tolist()):
                slot = self._slot(key)
                self.keys[slot] = key
                self.values[slot] = value

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


_WHITESPACE_RE = re.compile(r"\s+")


def normalize_for_dedup(text: str) -> str:
    """Unicode NFKC, lowercase, whitespace runs collapsed to one space, ends stripped: copies that
    differ only in case, width (全角 vs ASCII) or spacing count as the same text."""
    if not text.isascii():
        # Full-width ASCII (！ to ～) and the ideographic space → ASCII, in numpy: the part of NFKC
        # that Chinese text needs on almost every line, without NFKC's slow path.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).copy()
        codes[(codes >= 0xFF01) & (codes <= 0xFF5E)] -= 0xFEE0
        codes[codes == 0x3000] = 0x20
        text = codes.tobytes().decode("utf-32-le")
        if not unicodedata.is_normalized("NFKC", text):  # the check is far cheaper than normalizing
            text = unicodedata.normalize("NFKC", text)
    return _WHITESPACE_RE.sub(" ", text.lower()).strip()


def fingerprint(text: str) -> int:
    """A nonzero 64-bit digest of `text` (BLAKE2b): equal texts, equal fingerprints; with n texts
    the chance that two different ones collide is about n² / 2⁶⁵."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") or 1


class ExactDeduplicator:
    """Drop a record whose normalized text (`normalize_for_dedup` of `dedup_text`; `normalize=False`
    compares the raw text) equals that of an earlier kept record. The first copy wins."""

    name = "exact_dup"

    def __init__(self, normalize: bool = True):
        self.normalize = normalize
        self.description = "first copy of each " + ("normalized " if normalize else "") + "text"
        self.table = FingerprintTable()

    def check(self, sample: Sample) -> str | None:
        text = normalize_for_dedup(sample.dedup_text) if self.normalize else sample.dedup_text
        key = fingerprint(text)
        first = self.table.get(key)
        if first is not None:
            return f"duplicate of line {first}"
        self.table.add(key, sample.location)
        return None


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """The SplitMix64 finalizer, elementwise on uint64: spreads every input bit over the output."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# Shingles hashed per numpy step; bounds the (num_perm × chunk) temporary to a few MB.
_SHINGLE_CHUNK = 2048


def shingle_hashes(text: str, size: int = 5) -> np.ndarray:
    """64-bit hashes of the `size`-character shingles of `text`, in order, repeats included (a
    text shorter than `size` is one shingle; an empty text has none)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint64)
    size = min(size, len(codes))
    count = len(codes) - size + 1
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for offset in range(size):  # h = c0·P^(k-1) + c1·P^(k-2) + … + c(k-1), modulo 2^64
            hashes = hashes * _POLY + codes[offset:offset + count]
        return _splitmix64(hashes)


def jaccard(a: set, b: set) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


class MinHasher:
    """MinHash signatures: for each of `num_perm` random hash functions h_i, the minimum of h_i
    over a text's shingles. For two texts, P[min h_i(A) = min h_i(B)] = J(A, B), so the share of
    equal signature entries estimates their Jaccard similarity (Broder, 1997).

    h_i(x) = ((a_i·x + b_i) mod 2⁶⁴) >> 32 with random odd a_i — multiply-shift hashing of the
    already-mixed 64-bit shingle hashes into 32 bits.
    """

    def __init__(self, num_perm: int = 128, shingle_size: int = 5, seed: int = 1):
        if num_perm < 1 or shingle_size < 1:
            raise ValueError("num_perm and shingle_size must be positive")
        rng = np.random.default_rng(seed)
        self.num_perm, self.shingle_size = num_perm, shingle_size
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)

    def signature(self, text: str) -> np.ndarray:
        """The (num_perm,) uint32 signature of `normalize_for_dedup(text)`'s shingles."""
        hashes = shingle_hashes(normalize_for_dedup(text), self.shingle_size)
        minimum = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        a, b = self.a[:, None], self.b[:, None]
        with np.errstate(over="ignore"):
            for start in range(0, len(hashes), _SHINGLE_CHUNK):
                permuted = a * hashes[None, start:start + _SHINGLE_CHUNK]  # (P, chunk)
                permuted += b
                np.minimum(minimum, permuted.min(axis=1), out=minimum)
        # v >> 32 is monotone in v, so the minimum's top bits are the minimum of the top bits
        return (minimum >> np.uint64(32)).astype(np.uint32)

    @staticmethod
    def estimate_jaccard(first: np.ndarray, second: np.ndarray) -> float:
        return float(np.mean(first == second))


def lsh_candidate_probability(similarity, bands: int, rows: int):
    """P[two texts of Jaccard `similarity` share at least one band] = 1 − (1 − s^r)^b: the S-curve
    that LSH banding puts around its threshold."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


def lsh_parameters(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                   false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands·rows <= num_perm minimising the weighted area of false positives
    (∫₀ᵗ P ds) and false negatives (∫ₜ¹ 1 − P ds) — the criterion datasketch's MinHashLSH uses."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    below = np.linspace(0.0, threshold, 2001)
    above = np.linspace(threshold, 1.0, 2001)
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = np.trapezoid(lsh_candidate_probability(below, bands, rows), below)
            false_negative = np.trapezoid(1.0 - lsh_candidate_probability(above, bands, rows), above)
            error = false_positive_weight * false_positive + false_negative_weight * false_negative
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


class NearDeduplicator:
    """Drop a record whose MinHash signature shares a band with an earlier kept record (MinHash
    LSH). Each kept record stores `bands` 64-bit band keys (16 to 32 bytes each); a candidate is
    treated as a duplicate without a second check, so `threshold` is where the S-curve
    `lsh_candidate_probability` crosses — records somewhat below it are sometimes dropped too."""

    name = "near_dup"

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5, seed: int = 1):
        self.threshold = threshold
        self.hasher = MinHasher(num_perm, shingle_size, seed)
        self.bands, self.rows = lsh_parameters(threshold, num_perm)
        self.description = (f"MinHash LSH, Jaccard >= ~{threshold} on {shingle_size}-char shingles "
                            f"({self.bands} bands x {self.rows} rows)")
        self._row_multipliers = np.random.default_rng(seed + 1).integers(
            0, 2**64, size=self.rows, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._band_salts = np.arange(1, self.bands + 1, dtype=np.uint64) * _GOLDEN
        self.table = FingerprintTable()

    def band_keys(self, signature: np.ndarray) -> list[int]:
        """One nonzero 64-bit key per band: a hash of that band's rows, salted by the band index."""
        rows = signature[: self.bands * self.rows].reshape(self.bands, self.rows).astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = _splitmix64((rows * self._row_multipliers).sum(axis=1, dtype=np.uint64) ^ self._band_salts)
        return [key or 1 for key in keys.tolist()]

    def check(self, sample: Sample) -> str | None:
        keys = self.band_keys(self.hasher.signature(sample.dedup_text))
        for key in keys:
            first = self.table.get(key)
            if first is not None:
                return f"near duplicate of line {first}"
        for key in keys:
            self.table.add(key, sample.location)
        return None
