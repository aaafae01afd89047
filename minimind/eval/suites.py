"""The book's held-out suites: what a chat model trained on the synthetic world got right, by group,
each share with its 95% Wilson interval.

    facts        value-only questions (`World.questions`): "trained" (SFT people, SFT phrasings),
                 "reworded" (SFT people, phrasings never trained), "heldout" (people whose facts
                 appear only in pretraining); exact match up to case, spaces, final punctuation
    reasoning    held-out arithmetic problems by kind (add2, add3, sub3): right answer, and
                 the `<think>…</think><answer>…</answer>` format
    preference   "tell me about …" prompts on held-out people (the DPO val prompts): share of
                 replies in the polite style DPO prefers, and in the curt one it rejects
    identity     phrasings of "who are you?" never trained (the LoRA identity val prompts):
                 share of replies claiming the MiniMind identity
    tools        held-out problems by kind and held-out people's facts answered with the
                 calculator and the directory on offer, and names the directory does not hold
                 (right: "not found"): right answer, and replies made with a usable call

Replies are greedy, so a suite's score is a fixed number for fixed weights; the interval says
how far it could move on another draw of items of the same kind, which is what matters when
two models are compared on a few hundred items.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile
WORLD_SEED = 0  # the world data/ holds and the zoo trains on


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial share (Wilson 1927): unlike p ± z·sqrt(p(1-p)/n)
    it stays inside [0, 1] and does not collapse to a point at 0 or n successes."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one item, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends (rounding aside)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Score:
    """`correct` of `n` items of one group of a suite met `metric`."""

    suite: str
    group: str
    metric: str
    correct: int
    n: int

    @property
    def rate(self) -> float:
        return self.correct / self.n

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"suite": self.suite, "group": self.group, "metric": self.metric, "correct": self.correct,
                "n": self.n, "rate": self.rate, "ci95": [low, high]}

    def __str__(self) -> str:
        low, high = self.interval
        return (f"{self.suite:<11} {self.group:<9} {self.metric:<9} {self.rate:6.3f}  "
                f"[{low:.3f}, {high:.3f}]  n={self.n}")


def subset(items: Sequence, limit: Optional[int]) -> list:
    """At most `limit` of `items`: a fixed random subset in the items' order (every item when
    limit is None). Random rather than the first N, so a limited run still covers people,
    languages and attributes; fixed, so every run and every model gets the same items."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    return [items[i] for i in sorted(random.Random(0).sample(range(len(items)), limit))]


def _replies(model, tokenizer, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    from minimind.eval import replies

    return replies.answer_questions(model, tokenizer, prompts, max_new_tokens=max_new_tokens)


def facts_suite(model, tokenizer, limit: Optional[int] = None) -> list[Score]:
    from minimind.data.synthetic import build_world
    from minimind.scoring import is_correct

    world = build_world(WORLD_SEED)
    groups = {"trained": world.questions("sft", "train"), "reworded": world.questions("sft", "reworded"),
              "heldout": world.questions("heldout", "train")}
    scores = []
    for group, items in groups.items():
        items = subset(items, limit)
        replies = _replies(model, tokenizer, [item.prompt for item in items], max_new_tokens=16)
        correct = sum(is_correct(reply, item.answer) for reply, item in zip(replies, items))
        scores.append(Score("facts", group, "accuracy", correct, len(items)))
    return scores


def reasoning_suite(model, tokenizer, limit: Optional[int] = None) -> list[Score]:
    from minimind.data.synthetic import PROBLEM_KINDS, build_world
    from minimind.eval import replies
    from minimind.scoring import score_answers

    problems = build_world(WORLD_SEED).problems("val")
    scores = []
    for kind in PROBLEM_KINDS:
        chosen = subset([p for p in problems if p.kind == kind], limit)
        texts = replies.generate_replies(model, tokenizer, [p.prompt for p in chosen], max_new_tokens=100)
        result = score_answers(texts, [p.answer for p in chosen])
        scores.append(Score("reasoning", kind, "accuracy", result.correct, result.n))
        scores.append(Score("reasoning", kind, "format", result.well_formed, result.n))
    return scores


def preference_suite(model, tokenizer, limit: Optional[int] = None) -> list[Score]:
    from minimind.data.synthetic import dataset_rows
    from minimind.scoring import reply_style

    rows = subset(dataset_rows("dpo", "val", WORLD_SEED), limit)
    styles = [reply_style(reply) for reply in
              _replies(model, tokenizer, [row["chosen"][0]["content"] for row in rows], max_new_tokens=70)]
    return [Score("preference", "heldout", style, styles.count(style), len(styles)) for style in ("polite", "curt")]


def identity_suite(model, tokenizer, limit: Optional[int] = None) -> list[Score]:
    from minimind.data.synthetic import dataset_rows
    from minimind.scoring import is_minimind_identity

    rows = subset(dataset_rows("lora_identity", "val", WORLD_SEED), limit)
    replies = _replies(model, tokenizer, [row["conversations"][0]["content"] for row in rows], max_new_tokens=40)
    return [Score("identity", "heldout", "minimind", sum(map(is_minimind_identity, replies)), len(replies))]


def tools_suite(model, tokenizer, limit: Optional[int] = None) -> list[Score]:
    """Held-out problems and held-out people's facts answered with the book's tools on offer
    (`minimind.tools.default_registry`, calls run by `replies.tool_replies`), the share of replies
    with a usable call, and unknown names answered as not found."""
    from minimind.data.synthetic import NOT_IN_DIRECTORY, PROBLEM_KINDS, build_world, stranger_questions
    from minimind.eval import replies
    from minimind.scoring import is_correct
    from minimind.tools import default_registry

    world, registry = build_world(WORLD_SEED), default_registry(WORLD_SEED)
    problems = world.problems("val")
    groups = {kind: [(p.prompt, str(p.answer)) for p in problems if p.kind == kind] for kind in PROBLEM_KINDS}
    groups["heldout"] = [(item.prompt, item.answer) for item in world.questions("heldout", "train")]
    groups["strangers"] = [(item.prompt, NOT_IN_DIRECTORY[item.lang].format(name=item.subject))
                           for item in stranger_questions(world, "val", 100)]
    scores = []
    for group, items in groups.items():
        items = subset(items, limit)
        uses = replies.tool_replies(model, tokenizer, [prompt for prompt, _ in items], registry)
        correct = sum(is_correct(use.reply, answer) for use, (_, answer) in zip(uses, items))
        scores.append(Score("tools", group, "accuracy", correct, len(items)))
        scores.append(Score("tools", group, "usable_call", sum(bool(u.calls) and not u.malformed for u in uses), len(items)))
    return scores


SUITES: dict[str, Callable[..., list[Score]]] = {
    "facts": facts_suite,
    "reasoning": reasoning_suite,
    "preference": preference_suite,
    "identity": identity_suite,
    "tools": tools_suite,
}


def parse_suites(text: str) -> list[str]:
    """'facts,identity' → ['facts', 'identity']; 'all' → every suite; an unknown name is a ValueError."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(SUITES)
    unknown = [name for name in names if name not in SUITES]
    if unknown or not names:
        raise ValueError(f"unknown suite {', '.join(map(repr, unknown)) or repr(text)}; "
                         f"choose from {', '.join(SUITES)} (or all)")
    return names


def run_suites(model, tokenizer, names: Sequence[str], limit: Optional[int] = None) -> list[Score]:
    """Every score of the suites `names`, in order (greedy replies; the model is put in eval mode)."""
    model.eval()
    scores = []
    for name in names:
        if name not in SUITES:
            raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
        scores += SUITES[name](model, tokenizer, limit=limit)
    return scores
