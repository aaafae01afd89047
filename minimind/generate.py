"""Text generation: the sampling rules, streaming, and batched decoding over a preallocated KV cache.

One decoding loop serves every caller (the chat CLI, the server, the web demo, the chapters):

    params = SamplingParams(temperature=0.8, top_p=0.9, max_new_tokens=64)
    for token_id in stream_generate(model, prompt_ids, params): ...   # one prompt, token by token
    new_ids = generate(model, prompt_ids, params)                      # one prompt, all at once
    rows = generate_batch(model, [ids_a, ids_b], params)               # several prompts, left-padded

What upstream MiniMind's generation got wrong and this module does not:
- every option is a named field of `SamplingParams`; an unknown one is a TypeError, never
  silently ignored, and `max_new_tokens` is an exact upper bound;
- temperature 0 means greedy decoding (no division by zero), and top-k / top-p only act when sampling;
- a batch is left-padded and every row's real tokens get positions 0, 1, 2, … (so a prompt
  decodes to the same tokens alone or in a batch), with padding keys masked out;
- the KV cache is allocated once for prompt + new tokens, not regrown by concatenation.

Returned token lists never contain the stop token that ended them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from minimind.tokenizer import EOS_ID, PAD_ID, THINK_END, THINK_START


SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed takes


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each new token, and when to stop.

    temperature: 0 → greedy (argmax); otherwise logits are divided by it before sampling.
    top_k: keep only the k most likely tokens (0 = off). top_p: keep the smallest set of tokens
    whose probability adds up to at least p (1.0 = off). repetition_penalty: CTRL-style
    (Keskar et al. 2019), as in transformers: the logit of every token already present in the
    prompt or the output is divided by the penalty if positive, multiplied if negative (1.0 = off).
    max_new_tokens: the most tokens generated, stop token included. stop_token_ids: ids that end
    a row (not returned). thinking_budget: the most tokens a row may spend inside
    `<think>…</think>`; when it is used up `</think>` is forced (None = no limit).
    think_start_ids / think_end_ids: the id sequences of those tags in the model's vocabulary.
    seed: makes sampling reproducible (None = the global torch RNG).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = (EOS_ID,)
    thinking_budget: int | None = None
    think_start_ids: tuple[int, ...] | None = None
    think_end_ids: tuple[int, ...] | None = None
    seed: int | None = None

    def __post_init__(self):
        checks = [
            (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature >= 0,
             f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}"),
            (isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an integer >= 0, got {self.top_k!r}"),
            (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p!r}"),
            (isinstance(self.repetition_penalty, (int, float)) and math.isfinite(self.repetition_penalty)
             and self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty!r}"),
            (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
             f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"),
            (self.thinking_budget is None or (isinstance(self.thinking_budget, int) and self.thinking_budget >= 0),
             f"thinking_budget must be None or an integer >= 0, got {self.thinking_budget!r}"),
            (self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool)
                                   and SEED_RANGE[0] <= self.seed < SEED_RANGE[1]),
             f"seed must be None or an integer in [-2**63, 2**64), got {self.seed!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in self.stop_token_ids))
        for name in ("think_start_ids", "think_end_ids"):
            value = getattr(self, name)
            if value is not None:
                if len(value) == 0:
                    raise ValueError(f"{name} must not be empty")
                object.__setattr__(self, name, tuple(int(i) for i in value))
        if self.thinking_budget is not None and self.think_end_ids is None:
            raise ValueError("thinking_budget needs think_end_ids (and think_start_ids): "
                             "use SamplingParams.for_tokenizer(tokenizer, thinking_budget=…)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> "SamplingParams":
        """A copy with some fields changed; an unknown field name is a TypeError."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def for_tokenizer(cls, tokenizer, **fields) -> "SamplingParams":
        """Params whose think-tag ids come from `tokenizer` (needed for `thinking_budget`)."""
        fields.setdefault("think_start_ids", tuple(tokenizer.encode(THINK_START)))
        fields.setdefault("think_end_ids", tuple(tokenizer.encode(THINK_END)))
        return cls(**fields)


# ---------------------------------------------------------------------------------------------
# The sampling rules: each takes logits (B, V) and returns logits (B, V) or token ids (B,).

def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: for every token marked in `seen` (B, V bool), divide a positive logit by
    `penalty` and multiply a negative one, so the token becomes less likely either way."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (ties with the k-th are kept)."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the most likely tokens until their
    probabilities add up to at least p, drop the rest (the most likely token always stays)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(dim=-1)
    # Mass of the strictly more likely tokens: once it reaches p, the nucleus is complete.
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row from logits (B, V): argmax when temperature is 0, else sample
    from softmax(logits / temperature) after top-k then top-p filtering. Returns (B,) int64."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = sampling_distribution(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def sampling_distribution(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The probabilities (…, V) that `sample_next_token` samples from at temperature > 0:
    softmax(logits / temperature) after top-k then top-p filtering (speculative decoding
    compares the draft's and the target's)."""
    logits = logits.float()
    scaled = logits / temperature
    if not bool(torch.isfinite(scaled.amax(dim=-1)).all()):
        # a temperature so small that the logits overflowed (or it is 0 in float32): sampling
        # tends to the most likely token as the temperature goes to 0, so take that limit
        scaled = torch.zeros_like(logits).masked_fill(logits < logits.amax(dim=-1, keepdim=True), float("-inf"))
    logits = scaled
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return logits.softmax(dim=-1)


# ---------------------------------------------------------------------------------------------
# The decoding loop.

def _resolve_params(params: SamplingParams | None, overrides: dict) -> SamplingParams:
    params = params if params is not None else SamplingParams()
    return params.replace(**overrides) if overrides else params


def _ends_with(row: list[int], suffix: tuple[int, ...]) -> bool:
    return len(row) >= len(suffix) and tuple(row[-len(suffix):]) == suffix


def _opens_thinking(prompt: Sequence[int], params: SamplingParams) -> bool:
    """True when the prompt ends inside an open `<think>` block (the last start tag comes after
    the last end tag), e.g. a chat prompt rendered with thinking enabled."""
    def last_index(seq: tuple[int, ...]) -> int:
        n = len(seq)
        for start in range(len(prompt) - n, -1, -1):
            if tuple(prompt[start:start + n]) == seq:
                return start
        return -1
    return last_index(params.think_start_ids) > last_index(params.think_end_ids)


class _ThinkingBudget:
    """Counts each row's tokens inside `<think>…</think>` and, once a row's budget is spent,
    makes it emit the `</think>` tag (one token per step) before it may continue freely."""

    def __init__(self, prompts: Sequence[Sequence[int]], params: SamplingParams):
        self.params = params
        self.inside = [_opens_thinking(p, params) for p in prompts]
        self.spent = [0] * len(prompts)
        self.forced: list[list[int]] = [[] for _ in prompts]
        self.history: list[list[int]] = [list(p[-len(params.think_end_ids) - len(params.think_start_ids):])
                                         for p in prompts]

    def override(self, tokens: torch.Tensor) -> torch.Tensor:
        """Replace the sampled token of every row that must close its thinking now."""
        for row, inside in enumerate(self.inside):
            if inside and not self.forced[row] and self.spent[row] >= self.params.thinking_budget:
                self.forced[row] = list(self.params.think_end_ids)
            if self.forced[row]:
                tokens[row] = self.forced[row].pop(0)
        return tokens

    def observe(self, tokens: list[int]) -> None:
        for row, token in enumerate(tokens):
            history = self.history[row]
            history.append(token)
            if self.inside[row]:
                self.spent[row] += 1
                if _ends_with(history, self.params.think_end_ids):
                    self.inside[row] = False
                    self.forced[row] = []
            elif _ends_with(history, self.params.think_start_ids):
                self.inside[row] = True


def _model_context_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    length = 0
    while length < shortest - 1 and all(p[length] == prompts[0][length] for p in prompts):
        length += 1
    return length


@torch.inference_mode()
def _decode(model, prompts: Sequence[Sequence[int]], params: SamplingParams,
            share_prefix: bool = False, row_seeds: Sequence[int] | None = None) -> Iterator[list[int | None]]:
    """Yield, step by step, one entry per prompt: the new token id, or None once that row has
    stopped. A stop token is yielded (so callers see why a row ended) and ends its row.
    share_prefix: compute the tokens every prompt starts with once, for the whole batch.
    row_seeds: one generator per row (instead of params.seed's one for the batch)."""
    from minimind.model import KVCache

    if len(prompts) == 0:
        raise ValueError("no prompts given")
    prompts = [list(map(int, p)) for p in prompts]
    for row, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise ValueError(f"prompt {row} is empty: generation needs at least one token to start from")
    batch_size = len(prompts)
    prompt_len = max(len(p) for p in prompts)
    total_len = prompt_len + params.max_new_tokens
    context = _model_context_length(model)
    if context is not None and total_len > context:
        raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens ({params.max_new_tokens}) = {total_len} "
                         f"exceeds the model's context of {context} tokens")
    weight = next(model.parameters())
    device, dtype = weight.device, weight.dtype

    # A prefix every prompt shares (a long system turn) is computed once, on one row, and its cache
    # copied to every row; the padding of the rows' own tokens then sits between prefix and suffix.
    shared = shared_prefix_length(prompts) if share_prefix and batch_size > 1 else 0
    cache = KVCache(model.config, batch_size=batch_size, max_len=total_len, dtype=dtype, device=device)
    if shared:
        prefix = KVCache(model.config, batch_size=1, max_len=shared, dtype=dtype, device=device)
        model(torch.tensor([prompts[0][:shared]], device=device), cache=prefix, use_cache=True, logits_to_keep=1)
        for layer in range(prefix.num_layers):  # every row's cache starts as a copy of the prefix's
            cache.keys[layer][:, :, :shared] = prefix.keys[layer][:, :, :shared]
            cache.values[layer][:, :, :shared] = prefix.values[layer][:, :, :shared]
        cache.mask[:, :shared] = True
        cache.length, cache.next_position[:] = shared, prefix.next_position
    # Left padding: every row ends at the same column, so each step appends one column to all rows.
    # The model derives each row's positions (0, 1, 2, … over its real tokens) from the mask and
    # keeps the mask and the next positions in the cache for the decoding steps.
    own_len = prompt_len - shared
    input_ids = torch.full((batch_size, own_len), PAD_ID, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, own_len), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        own = prompt[shared:]
        input_ids[row, own_len - len(own):] = torch.tensor(own)
        attention_mask[row, own_len - len(own):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    padded = bool((attention_mask == 0).any())

    generator = None
    if params.seed is not None and not params.greedy:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    row_generators = None
    if row_seeds is not None:
        if len(row_seeds) != batch_size:
            raise ValueError(f"row_seeds has {len(row_seeds)} seeds for {batch_size} prompts")
        row_generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in row_seeds]
    seen = None
    if params.repetition_penalty != 1.0:
        seen = torch.zeros((batch_size, model.config.vocab_size), dtype=torch.bool, device=device)
        for row, prompt in enumerate(prompts):
            seen[row, torch.tensor(prompt, device=device)] = True
    budget = _ThinkingBudget(prompts, params) if params.thinking_budget is not None else None
    stop_ids = set(params.stop_token_ids)
    finished = [False] * batch_size

    output = model(input_ids, attention_mask=attention_mask if padded else None, cache=cache, use_cache=True,
                   logits_to_keep=1)
    for step in range(params.max_new_tokens):
        logits = output.logits[:, -1, :]
        if seen is not None:
            logits = apply_repetition_penalty(logits.float(), seen, params.repetition_penalty)
        if row_generators is not None and not params.greedy:
            probs = sampling_distribution(logits, params.temperature, params.top_k, params.top_p)
            tokens = torch.cat([torch.multinomial(probs[row], 1, generator=row_generator)
                                for row, row_generator in enumerate(row_generators)])
        else:
            tokens = sample_next_token(logits, params.temperature, params.top_k, params.top_p, generator)
        if budget is not None:
            tokens = budget.override(tokens)
        token_list = tokens.tolist()
        if any(finished):  # finished rows keep decoding padding until the whole batch is done
            token_list = [PAD_ID if done else token for token, done in zip(token_list, finished)]
            tokens = torch.tensor(token_list, device=device)
        if budget is not None:
            budget.observe(token_list)
        yield [None if done else token for token, done in zip(token_list, finished)]
        finished = [done or token in stop_ids for token, done in zip(token_list, finished)]
        if step == params.max_new_tokens - 1 or all(finished):
            return
        if seen is not None:
            seen.scatter_(1, tokens[:, None], True)
        output = model(tokens[:, None], cache=cache, use_cache=True)


class TokenStream:
    """The new tokens of one prompt, one at a time (an iterator of ints).

    After iteration, `finish_reason` is "stop" (a stop token ended it) or "length"
    (`max_new_tokens` reached); `completion_tokens` counts every generated token, the stop
    token included; `prompt_tokens` is the prompt's length.
    """

    def __init__(self, model, prompt_ids: Sequence[int], params: SamplingParams, steps: Iterator | None = None):
        self.params = params
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        # steps: another decoder's [token] per step (speculative decoding), else ours
        self._steps = steps if steps is not None else _decode(model, [prompt_ids], params)

    def __iter__(self) -> "TokenStream":
        return self

    def __next__(self) -> int:
        if self.finish_reason is not None:
            raise StopIteration
        try:
            (token,) = next(self._steps)
        except StopIteration:
            self.finish_reason = "length"
            raise
        self.completion_tokens += 1
        if token in self.params.stop_token_ids:
            self.finish_reason = "stop"
            self._steps.close()
            raise StopIteration
        return token

    def close(self) -> None:
        """Stop early (e.g. the client went away); frees the cache."""
        self._steps.close()
        if self.finish_reason is None:
            self.finish_reason = "cancelled"


def stream_generate(model, prompt_ids: Sequence[int], params: SamplingParams | None = None, **overrides) -> TokenStream:
    """Generate for one prompt, yielding each new token id as soon as it is chosen. A model
    that brings its own single-prompt decoder (`stream_generate(prompt_ids, params)`, e.g.
    `minimind.speculative.SpeculativeModel`) decodes with it."""
    params = _resolve_params(params, overrides)
    own = getattr(model, "stream_generate", None)
    if callable(own):
        return own(prompt_ids, params)
    return TokenStream(model, prompt_ids, params)


def generate(model, prompt_ids: Sequence[int], params: SamplingParams | None = None, **overrides) -> list[int]:
    """Generate for one prompt; returns the new token ids (without the stop token)."""
    return list(stream_generate(model, prompt_ids, params, **overrides))


def generate_batch(model, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None, *,
                   stop_when: Callable[[int, list[int]], bool] | None = None, share_prefix: bool = False,
                   row_seeds: Sequence[int] | None = None, **overrides) -> list[list[int]]:
    """Generate for several prompts at once (left-padded, one forward pass per step for the whole
    batch). With greedy decoding each row equals `generate` on that prompt alone.

    stop_when(row, new_ids): called after each token a row receives; True ends that row there
    (e.g. once its decoded text holds a stop string), and decoding ends when every row has ended.
    share_prefix: compute the tokens all prompts start with once (e.g. the system turn that offers
    tools) and copy its keys and values to every row, instead of computing it once per row.
    row_seeds: sample each row with a generator of its own, seeded with row_seeds[row], so a row's
    reply does not depend on which other prompts share its batch (RL split over processes).
    """
    params = _resolve_params(params, overrides)
    outputs: list[list[int]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    steps = _decode(model, prompts, params, share_prefix=share_prefix, row_seeds=row_seeds)
    for step_tokens in steps:
        for row, token in enumerate(step_tokens):
            if token is None or stopped[row]:
                continue
            if token in params.stop_token_ids:
                stopped[row] = True
            else:
                outputs[row].append(token)
                stopped[row] = stop_when is not None and stop_when(row, outputs[row])
        if all(stopped):
            steps.close()  # the remaining steps would only decode rows that have ended
            break
    return outputs


# ---------------------------------------------------------------------------------------------
# Text streaming.

class IncrementalDecoder:
    """Turns a stream of token ids into a stream of text pieces.

    A byte-level BPE token can end in the middle of a UTF-8 character (common for Chinese), so a
    piece is only released once it decodes without the replacement character; decoding restarts
    from a short window of recent tokens, not the whole text, to keep each step cheap.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[int] = []
        self.prefix_offset = 0  # window start: decoding from here gives stable text
        self.read_offset = 0    # text of tokens before this index has already been released

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ('' while a character is still partial)."""
        self.tokens.append(int(token_id))
        released = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        current = self._decode(self.tokens[self.prefix_offset:])
        if len(current) > len(released) and not current.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
            return current[len(released):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        released = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        current = self._decode(self.tokens[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.tokens)
        return current[len(released):]
