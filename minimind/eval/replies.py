"""The replies evaluation scores: a chat model's greedy answers to single-turn prompts, in batches.

One generation loop (`greedy_replies`) and the two reply conventions the book scores:
`answer_questions` (value answers: special tokens dropped, whitespace stripped, as `is_correct`
compares them) and `generate_replies` (reasoning replies: the tags kept, optionally started inside
an open `<think>` block). `exact_match` scores value answers against items with `.prompt` and `.answer`.
`tool_replies` answers questions with tools on offer, running the calls the model makes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from minimind.tokenizer import THINK_START


def greedy_replies(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, *,
                   enable_thinking: Optional[bool] = None, thinking_budget: Optional[int] = None,
                   skip_special_tokens: bool = False, batch_size: int = 64) -> list[str]:
    """Greedy replies of `model` to user `prompts` (one-turn chats), each decoded on its own.

    The prompts are rendered with the chat template (`enable_thinking` as the template's) and
    decoded `batch_size` at a time, left-padded: each row equals its prompt decoded alone.
    thinking_budget caps the tokens spent inside the think block (`</think>` is forced after).
    The model runs in eval mode and is put back in the mode it was in.
    """
    from minimind.generate import SamplingParams, generate_batch

    params = SamplingParams.for_tokenizer(tokenizer, temperature=0.0, max_new_tokens=max_new_tokens,
                                          thinking_budget=thinking_budget)
    prompt_ids = [tokenizer.encode_chat_prompt([{"role": "user", "content": prompt}], enable_thinking=enable_thinking)
                  for prompt in prompts]
    was_training = model.training
    model.eval()
    replies = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            for ids in generate_batch(model, prompt_ids[start:start + batch_size], params):
                replies.append(tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))
    finally:
        model.train(was_training)
    return replies


def answer_questions(model, tokenizer, questions: Sequence[str], max_new_tokens: int = 16,
                     batch_size: int = 64) -> list[str]:
    """Greedy replies of a chat model to single-turn questions, special tokens dropped and stripped."""
    replies = greedy_replies(model, tokenizer, questions, max_new_tokens, skip_special_tokens=True,
                             batch_size=batch_size)
    return [reply.strip() for reply in replies]


def generate_replies(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 96, open_thinking: bool = False,
                     thinking_budget: Optional[int] = None, batch_size: int = 64) -> list[str]:
    """Greedy replies of `model` to user `prompts` (one-turn chats), decoded with the tags kept.

    open_thinking=True renders the prompt with `<think>\\n` already appended (the template's
    enable_thinking), so the reply starts inside the think block; the returned text then
    begins with that `<think>\\n`, so it parses like a reply that opened the block itself.
    thinking_budget caps the tokens spent inside the think block (`</think>` is forced after).
    """
    if thinking_budget is not None and not open_thinking:
        raise ValueError("a thinking budget needs open_thinking=True (the budget counts from <think>)")
    prefix = THINK_START + "\n" if open_thinking else ""
    replies = greedy_replies(model, tokenizer, prompts, max_new_tokens, enable_thinking=True if open_thinking else None,
                             thinking_budget=thinking_budget, batch_size=batch_size)
    return [prefix + reply for reply in replies]


def exact_match(model, tokenizer, items, max_new_tokens: int = 16) -> tuple[float, list[str]]:
    """Share of `items` (objects with `.prompt` and `.answer`, e.g. `World.questions()`) answered
    exactly (up to case, spaces and final punctuation), and the replies."""
    from minimind.scoring import is_correct

    replies = answer_questions(model, tokenizer, [item.prompt for item in items], max_new_tokens)
    correct = sum(is_correct(reply, item.answer) for reply, item in zip(replies, items))
    return correct / max(len(items), 1), replies


@dataclass
class ToolUse:
    """One question answered with tools on offer: the conversation as it went and its outcome."""

    messages: list  # the user's question, then each assistant turn and the tool messages answering it
    calls: list  # every well-formed `ToolCall` the model made, in order
    malformed: list  # every `MalformedToolCall` it wrote
    reply: str  # its final text reply, stripped ("" when it was still calling tools at the last round)


def tool_replies(model, tokenizer, questions: Sequence[str], registry, *, max_new_tokens: int = 128,
                 max_rounds: int = 3, batch_size: int = 32) -> list[ToolUse]:
    """Greedy answers of `model` to single-turn `questions` with the tools of `registry` on offer.

    Each round generates the next assistant turn of every conversation still going (in batches); a
    turn with tool calls gets the registry's answers (errors included: `ToolRegistry.respond`) and
    goes on to the next round, a turn without calls is the reply. A conversation still calling
    tools after `max_rounds` turns ends with an empty reply.
    """
    from minimind.generate import SamplingParams, generate_batch
    from minimind.tools import assistant_message, parse_tool_calls

    params = SamplingParams.for_tokenizer(tokenizer, temperature=0.0, max_new_tokens=max_new_tokens)
    schemas = registry.schemas()
    uses = [ToolUse([{"role": "user", "content": question}], [], [], "") for question in questions]
    going = list(range(len(uses)))
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_rounds):
            texts = []
            for start in range(0, len(going), batch_size):
                prompts = [tokenizer.encode_chat_prompt(uses[i].messages, tools=schemas)
                           for i in going[start:start + batch_size]]
                texts += [tokenizer.decode(ids) for ids in generate_batch(model, prompts, params, share_prefix=True)]
            still_going = []
            for index, text in zip(going, texts):
                use, parsed = uses[index], parse_tool_calls(text, registry.names)
                if parsed.calls or parsed.malformed:
                    use.calls += parsed.calls
                    use.malformed += parsed.malformed
                    use.messages += [assistant_message(parsed), *registry.respond(parsed)]
                    still_going.append(index)
                else:
                    use.messages.append({"role": "assistant", "content": parsed.content})
                    use.reply = parsed.content.strip()
            going = still_going
            if not going:
                break
    finally:
        model.train(was_training)
    return uses
