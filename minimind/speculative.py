"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023): a small draft model proposes k
tokens one by one, the target model checks all of them in one forward pass over its KV cache,
and every accepted token saves the target a forward pass of its own.

    for token in speculative_decode(target, draft, prompt_ids, params, draft_tokens=4, stats=stats): ...
    model = SpeculativeModel(target, draft, draft_tokens=4)   # chat / serve: stream_generate(model, …)

The output distribution is the target's, exactly:
- greedy (temperature 0): a proposal is kept while it equals the target's argmax at that position;
  the first mismatch is replaced by the target's argmax (and after k kept proposals the target's
  next argmax is added), so the tokens are the target's own greedy tokens;
- sampling: proposal x, drawn from the draft's q, is kept with probability min(1, p(x)/q(x)); the
  first rejected one is replaced by a sample of norm(max(0, p − q)), and after k kept proposals
  one more token is sampled from p. p and q are the distributions `sample_next_token` samples
  from (temperature, top-k, top-p applied to both), so each token is distributed as the target's.

Each round the target reads the committed tokens it has not seen plus the k proposals (k + 1
logits); the rejected proposals are dropped from both caches by `rewind`, which moves the
cache's `length`, `mask` and `next_position` back (the stale keys beyond are overwritten later).
One prompt at a time: a batch would accept a different number of tokens per row; a
`SpeculativeModel` asked for a batch (`generate_batch`) decodes with the target alone. The
repetition penalty and the thinking budget depend on every previous token, so with either set
`SpeculativeModel` decodes with the target alone too (`speculative_decode` refuses them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from minimind.generate import SamplingParams, TokenStream, sampling_distribution
from minimind.model import KVCache


def rewind(cache: KVCache, new_length: int) -> KVCache:
    """Forget every entry of `cache` from position `new_length` on (0 <= new_length <= length):
    the next forward writes there. Each row's next position becomes its count of real tokens
    left (positions count a row's real tokens 0, 1, 2, …, as `MiniMindModel` assigns them)."""
    if not 0 <= new_length <= cache.length:
        raise ValueError(f"new_length must be in [0, {cache.length}], got {new_length}")
    cache.mask[:, new_length:] = False
    cache.length = new_length
    cache.next_position = cache.mask[:, :new_length].sum(dim=1).to(torch.long)
    return cache


@dataclass
class SpeculativeStats:
    """Counts of one or more speculative generations."""

    rounds: int = 0            # verification passes of the target (= target forwards)
    drafted: int = 0           # tokens the draft proposed
    accepted: int = 0          # proposals the target kept
    tokens: int = 0            # tokens emitted
    draft_forwards: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_target_forward(self) -> float:
        return self.tokens / self.rounds if self.rounds else 0.0


def accept_or_resample(target_probs: torch.Tensor, draft_probs: torch.Tensor, proposals: Sequence[int],
                       generator: torch.Generator | None = None) -> tuple[int, int]:
    """The speculative sampling rule. target_probs (k + 1, V): p at each proposal's position and
    one after; draft_probs (k, V): the q each proposal was drawn from. Returns (n, token): the
    first n proposals are kept and `token` follows them (a sample of norm(max(0, p − q)) at the
    first rejection, else of p after the last proposal)."""
    k = len(proposals)
    device = target_probs.device
    if k:
        index = torch.tensor(list(proposals), device=device)
        rows = torch.arange(k, device=device)
        p = target_probs[rows, index].tolist()
        q = draft_probs[rows, index].tolist()
        u = torch.rand(k, generator=generator, device=device).tolist()
        for i in range(k):
            if u[i] * q[i] < p[i]:  # u < min(1, p/q) without dividing (q > 0: x was drawn from q)
                continue
            residual = (target_probs[i] - draft_probs[i]).clamp(min=0)
            if float(residual.sum()) <= 0:  # p == q up to rounding: nothing to correct
                residual = target_probs[i]
            token = torch.multinomial(residual / residual.sum(), 1, generator=generator)
            return i, int(token)
    token = torch.multinomial(target_probs[k], 1, generator=generator)
    return k, int(token)


def _check_context(model, total_len: int, prompt_len: int, max_new_tokens: int, who: str) -> None:
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and total_len > context:
        raise ValueError(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) = {total_len} "
                         f"exceeds the {who}'s context of {context} tokens")


@torch.inference_mode()
def speculative_decode(target, draft, prompt_ids: Sequence[int], params: SamplingParams, draft_tokens: int = 4,
                       stats: SpeculativeStats | None = None) -> Iterator[list[int]]:
    """Yield [token] for each new token of one prompt, as `minimind.generate` decodes it with the
    target alone (greedy: the same tokens; sampling: the same distribution). The stop token that
    ends generation is yielded, then nothing. `stats` (if given) is updated as it goes."""
    if params.repetition_penalty != 1.0 or params.thinking_budget is not None:
        raise ValueError("speculative decoding supports neither repetition_penalty nor thinking_budget")
    if not isinstance(draft_tokens, int) or draft_tokens < 1:
        raise ValueError(f"draft_tokens must be an integer >= 1, got {draft_tokens!r}")
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"the draft's vocabulary ({draft.config.vocab_size}) is not the target's "
                         f"({target.config.vocab_size})")
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise ValueError("the prompt is empty: generation needs at least one token to start from")
    stats = stats if stats is not None else SpeculativeStats()
    total_len = len(prompt) + params.max_new_tokens
    _check_context(target, total_len, len(prompt), params.max_new_tokens, "model")
    _check_context(draft, total_len, len(prompt), params.max_new_tokens, "draft")
    weight = next(target.parameters())
    device = weight.device
    draft_weight = next(draft.parameters())
    target_cache = KVCache(target.config, 1, total_len, dtype=weight.dtype, device=device)
    draft_cache = KVCache(draft.config, 1, total_len, dtype=draft_weight.dtype, device=draft_weight.device)
    generator = None
    if params.seed is not None and not params.greedy:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    stop_ids = set(params.stop_token_ids)

    def distribution(logits):
        return sampling_distribution(logits, params.temperature, params.top_k, params.top_p).to(device)

    sequence = list(prompt)
    generated = 0
    while True:
        # never look past the last token we may emit: at most remaining - 1 proposals
        k = min(draft_tokens, params.max_new_tokens - generated - 1)
        proposals: list[int] = []
        draft_probs = []
        if k > 0:
            step = torch.tensor([sequence[draft_cache.length:]], device=draft_weight.device)
            for i in range(k):
                logits = draft(step, cache=draft_cache, use_cache=True, logits_to_keep=1).logits[0, -1]
                stats.draft_forwards += 1
                if params.greedy:
                    token = int(logits.argmax())
                else:
                    q = distribution(logits)
                    token = int(torch.multinomial(q, 1, generator=generator))
                    draft_probs.append(q)
                proposals.append(token)
                if token in stop_ids:
                    break  # proposing past a stop token is wasted work
                if i < k - 1:
                    step = torch.tensor([[token]], device=draft_weight.device)
        fed = sequence[target_cache.length:] + proposals
        logits = target(torch.tensor([fed], device=device), cache=target_cache, use_cache=True,
                        logits_to_keep=len(proposals) + 1).logits[0]  # (len(proposals) + 1, V)
        stats.rounds += 1
        stats.drafted += len(proposals)
        if params.greedy:
            choices = logits.argmax(dim=-1).tolist()
            kept = 0
            while kept < len(proposals) and proposals[kept] == choices[kept]:
                kept += 1
            following = choices[kept]
        else:
            q = torch.stack(draft_probs) if draft_probs else None
            kept, following = accept_or_resample(distribution(logits), q, proposals, generator)
        stats.accepted += kept
        rewind(target_cache, len(sequence) + kept)
        rewind(draft_cache, min(draft_cache.length, len(sequence) + kept))
        new = proposals[:kept] + [following]
        sequence += new
        for token in new:
            generated += 1
            stats.tokens += 1
            yield [token]
            if token in stop_ids or generated == params.max_new_tokens:
                return


def early_exit_draft(target, num_layers: int):
    """A draft made of the target's first `num_layers` blocks, its final norm and its LM head,
    sharing their weights (no copy): "self-speculative" / early-exit decoding (LayerSkip, Elhoushi
    et al. 2024). It needs no second model, but its proposals are only as good as the target's
    hidden states after those layers predict the next token; models trained without an early-exit
    loss are accepted less often than a distilled draft would be."""
    import dataclasses

    from minimind.model import MiniMind

    config = target.config
    if not 1 <= num_layers < config.num_hidden_layers:
        raise ValueError(f"num_layers must be in [1, {config.num_hidden_layers - 1}], got {num_layers}")
    draft = MiniMind(dataclasses.replace(config, num_hidden_layers=num_layers))
    draft.model.embed_tokens = target.model.embed_tokens
    draft.model.layers = nn.ModuleList(list(target.model.layers)[:num_layers])
    draft.model.norm = target.model.norm
    draft.lm_head = target.lm_head
    weight = next(target.parameters())
    return draft.to(device=weight.device).eval()


class SpeculativeModel(nn.Module):
    """A target model with a draft beside it. Called, it is the target (batches, log-probabilities,
    `generate_batch` all use the target alone); `minimind.generate.stream_generate` on it, which
    chat and serve use for every reply, decodes one prompt speculatively. `stats` accumulates
    over every speculative stream, `last_stats` is the latest stream's."""

    def __init__(self, target: nn.Module, draft: nn.Module, draft_tokens: int = 4):
        super().__init__()
        if draft.config.vocab_size != target.config.vocab_size:
            raise ValueError(f"the draft's vocabulary ({draft.config.vocab_size}) is not the model's "
                             f"({target.config.vocab_size}): a draft must share the model's tokenizer")
        if not isinstance(draft_tokens, int) or draft_tokens < 1:
            raise ValueError(f"draft_tokens must be an integer >= 1, got {draft_tokens!r}")
        self.target = target  # registered first: next(model.parameters()) is the target's
        self.draft = draft
        self.config = target.config
        self.draft_tokens = draft_tokens
        self.stats = SpeculativeStats()
        self.last_stats = SpeculativeStats()

    def forward(self, *args, **kwargs):
        return self.target(*args, **kwargs)

    def num_parameters(self) -> int:
        return self.target.num_parameters()

    def stream_generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> TokenStream:
        self.last_stats = SpeculativeStats()
        if params.repetition_penalty != 1.0 or params.thinking_budget is not None:
            return TokenStream(self.target, prompt_ids, params)
        steps = self._counted(speculative_decode(self.target, self.draft, prompt_ids, params, self.draft_tokens,
                                                 self.last_stats))
        return TokenStream(self.target, prompt_ids, params, steps=steps)

    def _counted(self, steps):
        before = SpeculativeStats(**vars(self.last_stats))
        try:
            yield from steps
        finally:
            for name, value in vars(self.last_stats).items():
                setattr(self.stats, name, getattr(self.stats, name) + value - getattr(before, name))
