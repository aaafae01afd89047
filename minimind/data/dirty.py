"""A deliberately dirty sample of the synthetic corpus, to watch each cleaning filter at work.

Real corpora come with junk: copies and near copies, symbol noise and broken characters,
HTML left over from scraping, lines in a script the model is not meant to learn, boilerplate
pasted again and again, generation loops, fragments and run-ons, empty or malformed
conversations, broken JSON lines. This module adds each kind, in known amounts, to clean rows
of the synthetic corpus and labels every row with what was done to it (field `dirt`, "clean"
for untouched rows), so a chapter can count which filter catches which kind of dirt. Same rows
and seed → the same sample.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

PRETRAIN_DIRT = ("exact_dup", "near_dup", "symbol_noise", "markup", "foreign_script",
                 "repeated_lines", "repeated_ngrams", "too_short", "too_long")
SFT_DIRT = ("exact_dup", "near_dup", "symbol_noise", "markup", "foreign_script", "repeated_ngrams",
            "too_long", "empty_conversation", "empty_message", "role_order")
LABEL = "dirt"
# A run-on row ("too_long") is longer than this many characters; the clean synthetic rows are
# at most a few hundred.
TOO_LONG = 1200
# A run-on conversation ("too_long") has more than this many characters of content.
TOO_LONG_CONVERSATION = 600
# Near copies of conversations are made from rows at least this long: a one-character change in
# a 30-character chat already moves it far from its original (see the chapter's exercise).
NEAR_DUP_MIN_CHARS = 120

_NOISE_RUNS = ("@#$%", "★☆★☆", "▓▒░", "\ufffd\ufffd\ufffd", "~~||~~", "{{}}[[]]", "\U0001f525\U0001f525\U0001f4af", "###&&&")
_HTML_OPEN = ('<div class="post-content"><p>', '<html><body><span style="color:#333">', '<td class="cell"><font size="2">')
_HTML_CLOSE = ("</p></div>", "</span></body></html>", "</font></td>")
_HTML_TAIL = ('<a href="https://example.com/read?id={n}&amp;ref=feed">阅读全文&gt;&gt;</a>',
              '&nbsp;&nbsp;<img src="http://img.example.net/{n}.jpg"/> <br/><br/>',
              '<script>var id={n};</script> www.example.org/share/{n}')
# Letters of scripts the book's corpus does not teach (the foreign-script lines).
_FOREIGN_ALPHABETS = ("абвгдеёжзийклмнопрстуфхцчшщыэюя", "αβγδεζηθικλμνξοπρστυφχψω",
                      "กขคงจฉชซญดตถทนบปผพฟภมยรลวศสหอ", "ابتثجحخدذرزسشصضطظعغفقكلمنهوي")
_BOILERPLATE = ("点击关注，获取更多精彩内容！", "Subscribe for more updates!", "本文转载自网络，如有侵权请联系删除。")


def _foreign_line(rng: random.Random, letters: int) -> str:
    alphabet = rng.choice(_FOREIGN_ALPHABETS)
    words, total = [], 0
    while total < letters:
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 8)))
        words.append(word)
        total += len(word)
    return " ".join(words)


def _edit(rng: random.Random, text: str) -> str:
    """A near copy: one character in every 80 replaced by a neighbour of the text, whitespace
    around lines changed — Jaccard similarity of 5-character shingles stays around 0.9."""
    characters = list(text)
    for _ in range(max(1, len(text) // 80)):
        position = rng.randrange(len(characters))
        replacements = sorted(set(text) - {characters[position]}) or ["x"]
        characters[position] = rng.choice(replacements)
    return "  " + "".join(characters).replace("\n", " \n") + " "


def _insert_noise(rng: random.Random, text: str) -> str:
    pieces = list(text)
    for _ in range(max(3, len(text) // 15)):
        pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(_NOISE_RUNS))
    return "".join(pieces)


def _add_markup(rng: random.Random, text: str, serial: int) -> str:
    style = rng.randrange(len(_HTML_OPEN))
    body = text.replace("\n", "<br/>\n")
    return _HTML_OPEN[style] + body + _HTML_CLOSE[style] + rng.choice(_HTML_TAIL).format(n=serial)


def _add_foreign_script(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    lines.insert(rng.randrange(len(lines) + 1), _foreign_line(rng, max(20, len(text) // 2)))
    return "\n".join(lines)


def _loop(rng: random.Random, text: str) -> str:
    """A generation loop: the first clause of the text, again and again."""
    clause = text.replace("\n", " ")[: rng.randint(6, 14)].strip() or "哈"
    return (clause + " ") * max(12, 300 // len(clause))


def dirty_text(kind: str, text: str, rng: random.Random, serial: int = 0, others=()) -> str:
    """`text` made dirty in the way `kind` names (one of PRETRAIN_DIRT, except the duplicates,
    which copy an earlier row)."""
    if kind == "symbol_noise":
        return _insert_noise(rng, text)
    if kind == "markup":
        return _add_markup(rng, text, serial)
    if kind == "foreign_script":
        return _add_foreign_script(rng, text)
    if kind == "repeated_lines":
        boilerplate = rng.choice(_BOILERPLATE)
        return "\n".join(line for line in text.split("\n") for line in (line, boilerplate, line))
    if kind == "repeated_ngrams":
        return _loop(rng, text)
    if kind == "too_short":
        return text[: rng.randint(2, 9)]
    if kind == "too_long":
        return "\n".join([text, *others])
    if kind == "near_dup":
        return _edit(rng, text)
    raise ValueError(f"unknown dirt {kind!r}")


def _positions(rng: random.Random, clean_count: int, kinds) -> list:
    """(insert after clean row i, kind, source row j <= i) for each dirty row; duplicates copy an
    earlier row, so the clean copy comes first and is the one deduplication keeps."""
    placed = []
    for kind in kinds:
        after = rng.randrange(clean_count)
        source = rng.randrange(after + 1)
        placed.append((after, kind, source))
    placed.sort(key=lambda item: item[0])
    return placed


def _dirt_plan(rng: random.Random, clean_count: int, dirty_fraction: float, kinds) -> list:
    if not 0.0 <= dirty_fraction < 1.0:
        raise ValueError(f"dirty_fraction must be in [0, 1), got {dirty_fraction}")
    dirty_count = round(clean_count * dirty_fraction / (1.0 - dirty_fraction))
    plan = [kinds[index % len(kinds)] for index in range(dirty_count)]  # equal shares of each kind
    rng.shuffle(plan)
    return _positions(rng, clean_count, plan)


def make_dirty_pretrain(texts, dirty_fraction: float = 0.25, seed: int = 0) -> list[dict]:
    """Clean pretraining `texts` plus dirty rows (a `dirty_fraction` of the result, the kinds of
    PRETRAIN_DIRT in equal shares), each `{"text", "dirt"}`."""
    texts = list(texts)
    rng = random.Random(seed)
    rows = []
    plan = iter(_dirt_plan(rng, len(texts), dirty_fraction, PRETRAIN_DIRT))
    pending = next(plan, None)
    for index, text in enumerate(texts):
        rows.append({"text": text, LABEL: "clean"})
        while pending is not None and pending[0] == index:
            _, kind, source = pending
            if kind == "exact_dup":
                dirty = texts[source]
            else:
                others = []
                while kind == "too_long" and len(texts[source]) + sum(len(t) + 1 for t in others) <= TOO_LONG:
                    others.append(rng.choice(texts))
                dirty = dirty_text(kind, texts[source], rng, serial=len(rows), others=others)
            rows.append({"text": dirty, LABEL: kind})
            pending = next(plan, None)
    return rows


def _dirty_conversation(kind: str, messages: list, rng: random.Random, serial: int, others=()) -> list:
    messages = [dict(message) for message in messages]
    replies = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
    reply = messages[rng.choice(replies)] if replies else messages[-1]
    if kind == "exact_dup":
        return messages
    if kind == "too_long":  # other conversations' turns appended: still well-formed, just long
        return messages + [dict(message) for other in others for message in other if message["role"] != "system"]
    if kind == "empty_conversation":
        return []
    if kind == "empty_message":
        reply["content"] = rng.choice(("", " ", "\n"))
        return messages
    if kind == "role_order":
        problem = rng.randrange(3)
        if problem == 0:  # the reply is missing: the conversation ends on the user
            return messages[:-1] if len(messages) > 1 else [{"role": "user", "content": messages[0]["content"]}]
        if problem == 1:  # roles swapped
            return [{**message, "role": {"user": "assistant", "assistant": "user"}.get(message["role"], message["role"])}
                    for message in messages]
        first_user = next(index for index, message in enumerate(messages) if message["role"] == "user")
        return messages[:first_user + 1] + [dict(messages[first_user])] + messages[first_user + 1:]  # a turn doubled
    if kind == "near_dup":
        longest = max((m for m in messages if m["role"] != "system"), key=lambda message: len(message["content"]))
        longest["content"] = _edit(rng, longest["content"]).strip()
        return messages
    text = reply["content"]
    reply["content"] = dirty_text(kind, text if len(text) > 12 else text + " " + text * 3, rng, serial)
    return messages


def _chars(row: dict) -> int:
    return sum(len(message["content"]) for message in row["conversations"])


def make_dirty_sft(rows, dirty_fraction: float = 0.25, seed: int = 0) -> list[dict]:
    """Clean SFT `rows` plus dirty ones (the kinds of SFT_DIRT in equal shares), each with `dirt`."""
    rows = list(rows)
    rng = random.Random(seed)
    out = []
    plan = iter(_dirt_plan(rng, len(rows), dirty_fraction, SFT_DIRT))
    pending = next(plan, None)
    for index, row in enumerate(rows):
        out.append({**row, LABEL: "clean"})
        while pending is not None and pending[0] == index:
            _, kind, source = pending
            if kind == "near_dup":  # the nearest earlier row long enough for a near copy to stay near
                long_enough = [j for j in range(source, -1, -1) if _chars(rows[j]) >= NEAR_DUP_MIN_CHARS]
                source = long_enough[0] if long_enough else source
            others = []
            while kind == "too_long" and _chars(rows[source]) + sum(map(_chars, others)) <= TOO_LONG_CONVERSATION:
                others.append(rng.choice(rows))
            out.append({"conversations": _dirty_conversation(kind, rows[source]["conversations"], rng, len(out),
                                                             [other["conversations"] for other in others]),
                        LABEL: kind})
            pending = next(plan, None)
    return out


def write_dirty_sample(path, kind: str = "pretrain", clean_rows: int = 2000, dirty_fraction: float = 0.25,
                       broken_lines: int = 3, seed: int = 0) -> Counter:
    """Write a dirty jsonl sample of the synthetic `kind` ('pretrain' or 'sft') dataset to `path`:
    `clean_rows` rows drawn from its train split, dirty rows added, and `broken_lines` lines of
    invalid JSON at seeded positions. Returns the count of rows per `dirt` label (the broken
    lines as 'broken_json')."""
    from minimind.files import atomic_write
    from minimind.data.jsonl import read_jsonl
    from minimind.data.synthetic import dataset_path

    if kind not in ("pretrain", "sft"):
        raise ValueError(f"kind must be 'pretrain' or 'sft', got {kind!r}")
    rng = random.Random(seed)
    clean = list(read_jsonl(dataset_path(kind, "train"), schema=kind))
    clean = rng.sample(clean, min(clean_rows, len(clean)))
    if kind == "pretrain":
        rows = make_dirty_pretrain([row["text"] for row in clean], dirty_fraction, seed)
    else:
        rows = make_dirty_sft(clean, dirty_fraction, seed)
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    for _ in range(broken_lines):  # a line cut short, as by an interrupted download
        position = rng.randrange(len(lines) + 1)
        line = lines[rng.randrange(len(lines))]
        lines.insert(position, line[: rng.randint(5, min(40, len(line) - 1))])
    data = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write(path, lambda temp: Path(temp).write_bytes(data))
    counts = Counter(row[LABEL] for row in rows)
    if broken_lines:
        counts["broken_json"] = broken_lines
    return counts
