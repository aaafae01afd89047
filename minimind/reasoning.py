"""Reading a reasoning model's reply: split `<think>…</think><answer>…</answer>`, judge its
format, and score answers against references."""
import re
from dataclasses import dataclass

from minimind.tokenizer import ANSWER_END, ANSWER_START, THINK_END, THINK_START, THINK_TOKENS

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


def generate_replies(model, tokenizer, prompts, max_new_tokens: int = 96, open_thinking: bool = False,
                     thinking_budget=None, batch_size: int = 64):
    """Greedy replies of `model` to user `prompts` (one-turn chats), decoded with the tags kept.

    open_thinking=True renders the prompt with `<think>\\n` already appended (the template's
    enable_thinking), so the reply starts inside the think block; the returned text then
    begins with that `<think>\\n`, so it parses like a reply that opened the block itself.
    thinking_budget caps the tokens spent inside the think block (`</think>` is forced after).
    """
    from minimind.generate import SamplingParams, generate_batch
    if thinking_budget is not None and not open_thinking:
        raise ValueError("a thinking budget needs open_thinking=True (the budget counts from <think>)")
    params = SamplingParams.for_tokenizer(tokenizer, temperature=0.0, max_new_tokens=max_new_tokens,
                                          thinking_budget=thinking_budget)
    chats = [[{"role": "user", "content": prompt}] for prompt in prompts]
    prompt_ids = [tokenizer.encode_chat_prompt(chat, enable_thinking=True if open_thinking else None)
                  for chat in chats]
    prefix = THINK_START + "\n" if open_thinking else ""
    was_training = model.training
    model.eval()
    replies = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            for ids in generate_batch(model, prompt_ids[start:start + batch_size], params):
                replies.append(prefix + tokenizer.decode(ids))
    finally:
        model.train(was_training)
    return replies
