"""Scoring replies: text in, verdicts out (no model, no torch), for the suites and the chapters.

- value answers (the facts and tea questions): `is_correct`, exact up to case, spaces and final
  punctuation;
- the two styles of the synthetic replies (what DPO prefers): `reply_style`;
- the identity the LoRA adapter teaches: `is_minimind_identity`;
- reasoning replies `<think>…</think><answer>…</answer>`: `parse_reasoning` splits one and judges
  its format, `score_answers` counts format and accuracy of a batch.
"""
import re
from dataclasses import dataclass

from minimind.data.synthetic import STYLE_PHRASES
from minimind.tokenizer import ANSWER_END, ANSWER_START, THINK_END, THINK_START, THINK_TOKENS


# ---------------------------------------------------------------------------------------------
# Value answers, styles, identity


def normalize_reply(text: str) -> str:
    """Case-, space- and final-punctuation-insensitive form of a short reply."""
    return " ".join(text.split()).strip(" .。!！").casefold()


def is_correct(reply: str, answer: str) -> bool:
    """Exact match of a value-only reply (up to case, spaces and final punctuation)."""
    return normalize_reply(reply) == normalize_reply(answer)


def reply_style(text: str) -> str:
    """"polite", "curt" or "neither", from the fixed phrases the styled replies use."""
    found = {style for style, by_lang in STYLE_PHRASES.items()
             for openings, closings in by_lang.values() for phrase in openings + closings if phrase in text}
    return found.pop() if len(found) == 1 else "neither"


def is_minimind_identity(text: str) -> bool:
    """Did the reply claim the MiniMind identity the LoRA teaches?"""
    return "MiniMind" in text


# ---------------------------------------------------------------------------------------------
# Reasoning replies


# The whole reply, nothing before or after but whitespace: one think block, then one answer block.
_THINK_THEN_ANSWER = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_ANSWER_ONLY = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def _between(text: str, opening: str, closing: str):
    """Text between the first `opening` and the next `closing`, or None if either is missing."""
    start = text.find(opening)
    if start < 0:
        return None
    start += len(opening)
    end = text.find(closing, start)
    return None if end < 0 else text[start:end].strip()


def parse_reasoning(text: str, require_think: bool = True):
    """Split a reply into (think, answer, well_formed).

    well_formed is True when the reply is exactly one `<think>…</think>` block followed by
    one `<answer>…</answer>` block (whitespace around and between them allowed), each tag
    appearing once. With require_think=False a reply that is a single answer block (a
    "direct answer") is also well formed.
    think / answer are the stripped contents of the first complete block of each kind, or
    None when that block is missing — so a malformed reply can still carry a gradeable answer.
    """
    tags_once = all(text.count(tag) == 1 for tag in THINK_TOKENS)
    match = _THINK_THEN_ANSWER.fullmatch(text)
    if match and tags_once:
        return match.group(1).strip(), match.group(2).strip(), True
    think = _between(text, THINK_START, THINK_END)
    answer = _between(text, ANSWER_START, ANSWER_END)
    answer_only = (
        not require_think
        and _ANSWER_ONLY.fullmatch(text) is not None
        and text.count(ANSWER_START) == 1
        and text.count(ANSWER_END) == 1
        and THINK_START not in text
        and THINK_END not in text
    )
    return think, answer, answer_only


def normalize_answer(answer: str) -> str:
    """Answers compare equal up to surrounding/repeated whitespace and letter case."""
    return " ".join(answer.split()).casefold()


@dataclass(frozen=True)
class ReasoningScore:
    """How a batch of replies did: counts and the two rates the book reports."""

    n: int
    well_formed: int  # replies in the expected format
    correct: int  # replies whose answer block matches the reference

    @property
    def format_rate(self) -> float:
        return self.well_formed / self.n if self.n else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def score_answers(replies, references, require_think: bool = True, require_format: bool = False) -> ReasoningScore:
    """Score replies against reference answers.

    A reply is correct when its answer block, normalised, equals the normalised reference.
    require_format=True additionally counts a reply as correct only if it is well formed
    (strict grading); by default a correct answer inside a malformed reply still counts,
    so that format adherence and answer accuracy are measured separately.
    """
    replies, references = list(replies), list(references)
    if len(replies) != len(references):
        raise ValueError(f"{len(replies)} replies but {len(references)} references")
    well_formed = correct = 0
    for reply, reference in zip(replies, references):
        _, answer, ok = parse_reasoning(reply, require_think=require_think)
        well_formed += ok
        if answer is not None and normalize_answer(answer) == normalize_answer(str(reference)):
            correct += ok or not require_format
    return ReasoningScore(n=len(replies), well_formed=well_formed, correct=correct)
