"""Converters between the chat formats found in public corpora and MiniMind's own schemas.

MiniMind's schemas (upstream's, unchanged): pretraining `{"text": str}`; SFT
`{"conversations": [{"role", "content"}, …]}`; DPO `{"chosen": [messages], "rejected":
[messages]}`; reasoning SFT whose assistant content is
`<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>` (as upstream's `r1_mix_1024.jsonl`).

Foreign formats: OpenAI-style `{"messages": [{"role", "content"}]}` (content may be a list of
text parts; `developer` is a system message); ShareGPT-style `{"conversations": [{"from",
"value"}]}` with an optional top-level `system`; preference rows with `prompt`/`chosen`/`rejected`
strings; reasoning rows with the reasoning in `reasoning_content`, in a leading
`<think>…</think>` block, or in flat fields (`question`, `reasoning`, `answer`, …).

Every converter takes one record and returns one record; fields other than the converted ones
are carried over unchanged. A record that cannot be converted raises `RecordError` with the
reason (the pipeline adds file and line). Messages keep `role`, `content` and
`reasoning_content`; other message fields (names, tool calls, images) are not part of
MiniMind's schema and raise an error rather than vanish.
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from minimind.data.filters import RecordError
from minimind.tokenizer import ROLES

# --------------------------------------------------------------------------------------------
# Messages

_MESSAGE_FIELDS = {"role", "content", "reasoning_content"}
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
                  "bing": "assistant", "model": "assistant"}
SHAREGPT_NAMES = {"user": "human", "assistant": "gpt", "system": "system"}


def _text_content(content, where: str) -> str:
    """A message content as one string; OpenAI's list of parts must hold only text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RecordError(f"{where}: a content part of type {kind!r} is not text")
        return "".join(texts)
    if content is None:
        raise RecordError(f"{where}: no content")
    raise RecordError(f"{where}: content is {type(content).__name__}, not a string")


def _minimind_message(message, role_map: dict, role_key: str, content_key: str, where: str) -> dict:
    if not isinstance(message, dict):
        raise RecordError(f"{where}: a message is {type(message).__name__}, not an object")
    role = message.get(role_key)
    if role not in role_map:
        raise RecordError(f"{where}: {role_key} {role!r} has no MiniMind role (known: {', '.join(role_map)})")
    extra = {key for key, value in message.items() if value not in (None, "", [])} - {role_key, content_key, "reasoning_content"}
    if extra:
        raise RecordError(f"{where}: message fields {sorted(extra)} have no place in MiniMind's schema")
    converted = {"role": role_map[role], "content": _text_content(message.get(content_key), where)}
    reasoning = message.get("reasoning_content")
    if reasoning:
        if not isinstance(reasoning, str):
            raise RecordError(f"{where}: reasoning_content is {type(reasoning).__name__}, not a string")
        converted["reasoning_content"] = reasoning
    return converted


def _message_list(messages, field: str) -> list:
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"'{field}' must be a non-empty list of messages")
    return messages


def _check_minimind(messages: list, field: str) -> list:
    for index, message in enumerate(_message_list(messages, field)):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise RecordError(f"{field}[{index}] is not a MiniMind message {{role: {'|'.join(ROLES)}, content: str}}")
    return messages


# --------------------------------------------------------------------------------------------
# SFT conversations


def openai_to_minimind(record: dict) -> dict:
    """`{"messages": [...]}` (OpenAI chat format) → `{"conversations": [...]}`."""
    messages = _message_list(record.get("messages"), "messages")
    rest = {key: value for key, value in record.items() if key != "messages"}
    return {**rest, "conversations": [_minimind_message(m, OPENAI_ROLES, "role", "content", f"messages[{i}]")
                                      for i, m in enumerate(messages)]}


def minimind_to_openai(record: dict) -> dict:
    """`{"conversations": [...]}` → `{"messages": [...]}` (the inverse of `openai_to_minimind`)."""
    messages = _check_minimind(record.get("conversations"), "conversations")
    rest = {key: value for key, value in record.items() if key != "conversations"}
    return {**rest, "messages": [dict(message) for message in messages]}


def sharegpt_to_minimind(record: dict) -> dict:
    """ShareGPT `{"conversations": [{"from", "value"}], "system"?}` → MiniMind `conversations`.
    A top-level `system` string becomes the first message."""
    turns = _message_list(record.get("conversations"), "conversations")
    rest = {key: value for key, value in record.items() if key not in ("conversations", "system")}
    messages = [_minimind_message(turn, SHAREGPT_ROLES, "from", "value", f"conversations[{i}]")
                for i, turn in enumerate(turns)]
    system = record.get("system")
    if system:
        if not isinstance(system, str):
            raise RecordError(f"'system' is {type(system).__name__}, not a string")
        messages.insert(0, {"role": "system", "content": system})
    return {**rest, "conversations": messages}


def minimind_to_sharegpt(record: dict) -> dict:
    """MiniMind `conversations` → ShareGPT (`human`/`gpt` turns, a leading system message moved
    to the top-level `system` field) — the inverse of `sharegpt_to_minimind`."""
    messages = list(_check_minimind(record.get("conversations"), "conversations"))
    rest = {key: value for key, value in record.items() if key != "conversations"}
    if messages[0]["role"] == "system":
        rest["system"] = messages.pop(0)["content"]
    turns = []
    for message in messages:
        turn = {"from": SHAREGPT_NAMES[message["role"]], "value": message["content"]}
        if message.get("reasoning_content"):
            turn["reasoning_content"] = message["reasoning_content"]
        turns.append(turn)
    return {**rest, "conversations": turns}


def sft_to_pretrain(record: dict, roles=("user", "assistant"), separator: str = "\n") -> dict:
    """An SFT conversation → a pretraining text: the contents of the messages whose role is in
    `roles`, joined by `separator` — how upstream turned the Chinese part of an SFT corpus into
    `pretrain_hq.jsonl`. Other fields of the record are dropped (a pretraining row is only text)."""
    messages = _check_minimind(record.get("conversations"), "conversations")
    parts = [message["content"].strip() for message in messages if message["role"] in roles]
    return {"text": separator.join(part for part in parts if part)}


def pack_texts(records: Iterable[dict], max_chars: int, separator: str = "\n") -> Iterator[dict]:
    """Join consecutive `{"text"}` records into texts of at most `max_chars` characters (a text
    longer than that on its own passes through alone), so short passages fill a context window —
    upstream concatenated its cleaned passages the same way. Streams: one text in memory."""
    buffer: list[str] = []
    length = 0
    for record in records:
        text = record["text"]
        added = len(text) + (len(separator) if buffer else 0)
        if buffer and length + added > max_chars:
            yield {"text": separator.join(buffer)}
            buffer, length, added = [], 0, len(text)
        buffer.append(text)
        length += added
    if buffer:
        yield {"text": separator.join(buffer)}


# --------------------------------------------------------------------------------------------
# Preference pairs


def preference_to_dpo(record: dict) -> dict:
    """A preference row → MiniMind's DPO schema `{"chosen": [messages], "rejected": [messages]}`.

    Accepts `prompt`/`chosen`/`rejected` strings (and an optional `system` string), or TRL's
    conversational form where `prompt` is a list of messages and `chosen`/`rejected` are lists
    holding the assistant reply, or `chosen`/`rejected` already full OpenAI-style conversations.
    """
    rest = {key: value for key, value in record.items() if key not in ("prompt", "chosen", "rejected", "system")}
    chosen, rejected, prompt = record.get("chosen"), record.get("rejected"), record.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str):
            raise RecordError("'prompt' must be a string when 'chosen' and 'rejected' are strings")
        head = [{"role": "user", "content": prompt}]
        system = record.get("system")
        if system:
            head.insert(0, {"role": "system", "content": system})
        return {**rest, "chosen": head + [{"role": "assistant", "content": chosen}],
                "rejected": head + [{"role": "assistant", "content": rejected}]}
    if isinstance(chosen, list) and isinstance(rejected, list):
        head = []
        if prompt is not None:
            if isinstance(prompt, str):
                head = [{"role": "user", "content": prompt}]
            else:
                head = [_minimind_message(m, OPENAI_ROLES, "role", "content", f"prompt[{i}]")
                        for i, m in enumerate(_message_list(prompt, "prompt"))]
        sides = {}
        for field, messages in (("chosen", chosen), ("rejected", rejected)):
            sides[field] = head + [_minimind_message(m, OPENAI_ROLES, "role", "content", f"{field}[{i}]")
                                   for i, m in enumerate(_message_list(messages, field))]
        return {**rest, **sides}
    raise RecordError("'chosen' and 'rejected' must both be strings or both be lists of messages")


def dpo_to_preference(record: dict) -> dict:
    """MiniMind's DPO schema → `prompt`/`chosen`/`rejected` strings (+ `system` if there is one),
    the inverse of `preference_to_dpo` for single-turn pairs."""
    chosen = _check_minimind(record.get("chosen"), "chosen")
    rejected = _check_minimind(record.get("rejected"), "rejected")
    rest = {key: value for key, value in record.items() if key not in ("chosen", "rejected")}
    if chosen[:-1] != rejected[:-1]:
        raise RecordError("chosen and rejected do not share their prompt")
    head = list(chosen[:-1])
    system = head.pop(0)["content"] if head and head[0]["role"] == "system" else None
    if [message["role"] for message in head] != ["user"] or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise RecordError("only a single user turn answered by the assistant has a prompt/chosen/rejected form")
    converted = {**rest, "prompt": head[0]["content"], "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"]}
    if system is not None:
        converted["system"] = system
    return converted


# --------------------------------------------------------------------------------------------
# Reasoning

_THINK_RE = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL)
_TAGGED_RE = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_FLAT_FIELDS = {
    "question": ("question", "prompt", "instruction", "problem", "input"),
    "reasoning": ("reasoning", "reasoning_content", "thinking", "think", "cot", "rationale"),
    "answer": ("answer", "response", "output", "solution", "completion"),
}


def reasoning_content(reasoning: str, answer: str) -> str:
    """The assistant content of a reasoning sample: `<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>`."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n{answer.strip()}\n</answer>"


def split_reasoning(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an assistant content in the tagged format, or in DeepSeek-R1's
    `<think>…</think>answer` form; RecordError when there is no think block."""
    match = _TAGGED_RE.match(content) or _THINK_RE.match(content)
    if not match:
        raise RecordError("the assistant content has no leading <think>…</think> block")
    return match.group(1).strip(), match.group(2).strip()


def _first_field(record: dict, role: str) -> tuple[str, str]:
    for field in _FLAT_FIELDS[role]:
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return field, value
    raise RecordError(f"no {role} field (looked for {', '.join(_FLAT_FIELDS[role])})")


def reasoning_to_minimind(record: dict) -> dict:
    """A reasoning sample → MiniMind conversations whose assistant turns read
    `<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>`.

    Sources: conversations (MiniMind or OpenAI) whose assistant messages carry
    `reasoning_content` or open with a `<think>` block; or flat rows with a question, a
    reasoning and an answer field (`question`/`prompt`/…, `reasoning`/`thinking`/`cot`/…,
    `answer`/`response`/`output`/…). Assistant turns without any reasoning raise RecordError:
    a reasoning set whose replies have no think block would teach the format inconsistently.
    """
    if "conversations" in record or "messages" in record:
        converted = openai_to_minimind(record) if "messages" in record else dict(record)
        messages = []
        for index, message in enumerate(_check_minimind(converted["conversations"], "conversations")):
            message = dict(message)
            if message["role"] == "assistant":
                if message.get("reasoning_content"):
                    reasoning, answer = message.pop("reasoning_content"), message["content"]
                else:
                    try:
                        reasoning, answer = split_reasoning(message["content"])
                    except RecordError as error:
                        raise RecordError(f"conversations[{index}]: {error}") from None
                message["content"] = reasoning_content(reasoning, answer)
            messages.append(message)
        return {**converted, "conversations": messages}
    used = []
    parts = {}
    for role in ("question", "reasoning", "answer"):
        field, parts[role] = _first_field(record, role)
        used.append(field)
    rest = {key: value for key, value in record.items() if key not in used}
    return {**rest, "conversations": [{"role": "user", "content": parts["question"]},
                                      {"role": "assistant", "content": reasoning_content(parts["reasoning"], parts["answer"])}]}


def minimind_reasoning_to_openai(record: dict) -> dict:
    """MiniMind reasoning conversations → OpenAI messages with the reasoning in
    `reasoning_content` and the answer in `content` (the inverse of `reasoning_to_minimind`)."""
    messages = []
    for message in _check_minimind(record.get("conversations"), "conversations"):
        message = dict(message)
        if message["role"] == "assistant":
            message["reasoning_content"], message["content"] = split_reasoning(message["content"])
        messages.append(message)
    rest = {key: value for key, value in record.items() if key != "conversations"}
    return {**rest, "messages": messages}


# --------------------------------------------------------------------------------------------
# Dispatch

SOURCE_FORMATS = ("minimind", "openai", "sharegpt", "preference", "dpo", "reasoning", "pretrain")
TARGET_FORMATS = ("minimind", "pretrain", "dpo", "reasoning", "openai", "sharegpt", "preference")


def detect_record_format(record: dict) -> str:
    """Which format a record is in, from its fields: 'pretrain' (`text`), 'openai' (`messages`),
    'sharegpt' (`conversations` with `from`/`value`), 'minimind' (`conversations` with
    `role`/`content`), 'preference' (`chosen`/`rejected` strings, or a `prompt` field), 'dpo'
    (`chosen`/`rejected` conversations), 'reasoning' (flat question/reasoning/answer fields)."""
    if "text" in record:
        return "pretrain"
    if "messages" in record:
        return "openai"
    turns = record.get("conversations")
    if isinstance(turns, list) and turns and isinstance(turns[0], dict):
        if "from" in turns[0] or "value" in turns[0]:
            return "sharegpt"
        return "minimind"
    if "chosen" in record and "rejected" in record:
        if isinstance(record["chosen"], str) or "prompt" in record:
            return "preference"
        return "dpo"
    if any(field in record for field in _FLAT_FIELDS["reasoning"]):
        return "reasoning"
    if isinstance(turns, list):
        return "minimind"  # an empty conversation: MiniMind's filters report it
    raise RecordError(f"cannot tell the format of a record with fields {sorted(record)}")


def convert_record(record: dict, to: str, source: str = "auto") -> dict:
    """Convert one record to the target format `to` (one of TARGET_FORMATS) from `source` (one of
    SOURCE_FORMATS, or 'auto' to detect it per record)."""
    if to not in TARGET_FORMATS:
        raise ValueError(f"unknown target format {to!r}; expected one of {TARGET_FORMATS}")
    source = detect_record_format(record) if source == "auto" else source
    if source not in SOURCE_FORMATS:
        raise ValueError(f"unknown source format {source!r}; expected one of {SOURCE_FORMATS}")
    if to == "reasoning":
        if source not in ("minimind", "openai", "reasoning"):
            raise RecordError(f"a {source} record cannot become a reasoning sample")
        return reasoning_to_minimind(record)
    if to == "dpo" or to == "preference":
        if source == "preference":
            dpo = preference_to_dpo(record)
        elif source == "dpo":
            dpo = record
        else:
            raise RecordError(f"a {source} record is not a preference pair")
        return dpo if to == "dpo" else dpo_to_preference(dpo)
    if source == "pretrain":
        if to != "pretrain":
            raise RecordError("a pretraining text has no conversation to convert")
        return record
    # to is minimind, pretrain, openai or sharegpt: go through MiniMind conversations
    if source == "openai":
        minimind = openai_to_minimind(record)
    elif source == "sharegpt":
        minimind = sharegpt_to_minimind(record)
    elif source == "reasoning":
        minimind = reasoning_to_minimind(record)
    elif source == "minimind":
        minimind = record
    else:
        raise RecordError(f"a {source} record is not a conversation")
    if to == "minimind":
        return minimind
    if to == "pretrain":
        return sft_to_pretrain(minimind)
    if to == "openai":
        return minimind_to_openai(minimind)
    return minimind_to_sharegpt(minimind)
