"""Reinforcement learning with verifiable rewards: the reasoning model samples replies to the book's
arithmetic problems, a checker scores them, and the policy is pushed towards the better ones.

    python -m minimind.train.rl --help
    python -m minimind.train.rl --init_from out/reason --out_dir out/rl                 # GRPO, 8 replies a prompt
    python -m minimind.train.rl --algorithm cispo --clip_high 4.0                      # MiniMax's CISPO
    python -m minimind.train.rl --algorithm ppo --group_size 1 --ppo_epochs 2          # PPO with a value head
    python -m minimind.train.rl --kl_coef 0.02 --loss_aggregation sequence             # GRPO as first published

One step: draw `--prompts_per_step` problems, sample `--group_size` replies to each with the
package's batched KV-cache decoding (`--temperature`, `--top_p`), score each reply with `reward`
(the evaluation suites' verifier: the answer block must equal the reference), turn the rewards
into advantages, then run `--ppo_epochs` optimizer updates on that rollout batch:

- grpo: advantage = reward minus the mean of its group (divided by the group's std unless
  `--scale_rewards false`, Dr. GRPO), the PPO clipped surrogate on every reply token
  (`grpo_token_loss`; `--clip_high` above `--clip_low` is DAPO's clip-higher);
- cispo: the same advantages, but the clipped importance weight is detached and multiplies
  advantage × log π (`cispo_token_loss`), so no token loses its gradient to clipping;
- ppo: a value head (one Linear on the final hidden state, `ValueHead`, kept here: the model's
  module is unchanged) predicts each token's return, advantages are GAE over the token sequence
  (`gae`; the reward arrives at the last token), and `ppo_value_loss` trains the head.

`--kl_coef > 0` keeps a frozen copy of the starting model and adds the k3 estimate of
KL(π‖π_ref) per token to the loss (as TRL does); 0 (DAPO's default) needs no second model.
`--loss_aggregation token` averages over every reply token of the batch (DAPO: long replies weigh
by their length); `sequence` averages each reply first, then the replies (the GRPO paper).

Log-probs are those of the sampling distribution: logits divided by `--temperature` (top-p's
truncation is ignored, as TRL does). The loop is written here, not in `minimind.train.loop`: a
step is a rollout plus several updates on it, which the loop's dataset-and-loss contract cannot
express. It reuses the loop's optimizer groups, schedule and checkpoint files (weights,
tokenizer, `train_config.json`, `metrics.jsonl`, `resume.pt` for `--resume`). Under torchrun the
step's prompts are split over the processes and the gradients summed, with the replies and the
update of one process (each reply has its own sampling seed).
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from minimind.scoring import score_answers
from minimind.runtime import autocast_context, resolve_device, resolve_dtype, rng_state, seed_everything, set_rng_state
from minimind.tokenizer import EOS_ID, PAD_ID
from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import NonFiniteLossError, StepInfo, TrainResult, learning_rate_at, param_groups
from minimind.train.metrics import MetricsLog
from minimind.train.stage import build_model, check_vocabulary, load_tokenizer
from minimind.train.state import (METRICS_FILE, RESUME_FILE, Resume, TrainState, existing_run_problem,
                                  write_train_config)

ALGORITHMS = ("grpo", "cispo", "ppo")
VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class RLConfig(TrainConfig):
    """On-policy RL with verifiable rewards on the book's arithmetic problems (python -m minimind.train.rl)."""

    init_from: str = option("out/reason", "checkpoint to improve, also the frozen reference when --kl_coef > 0 "
                            "(the reasoning model `python -m minimind.train.reason` writes)")
    out_dir: str = option("out/rl", "where weights and metrics go (empty: save nothing)")
    split: str = option("rl", "which problems of the synthetic world to train on (rl: problems no other stage "
                        "trains on, half of them in phrasings the reasoning data never uses)",
                        choices=("rl", "train", "val", "reworded"))
    max_prompts: int = option(0, "use only the first N problems of the split (0: all)")
    algorithm: str = option("grpo", "policy objective: GRPO's clipped surrogate, CISPO's clipped detached "
                            "importance weight, or PPO with a value head and GAE", choices=ALGORITHMS)
    group_size: int = option(8, "replies sampled per prompt (G); grpo and cispo compare a reply with its group")
    prompts_per_step: int = option(8, "prompts per rollout batch (the batch holds prompts_per_step x G replies)")
    max_new_tokens: int = option(128, "most tokens a reply may have (its end token included)")
    temperature: float = option(1.0, "sampling temperature of the rollouts (the log-probs use the same)")
    top_p: float = option(1.0, "nucleus sampling of the rollouts (1: off)")
    ppo_epochs: int = option(1, "optimizer updates on each rollout batch (1: purely on-policy, the ratio is 1)")
    clip_low: float = option(0.2, "ratio clipped below at 1 - clip_low")
    clip_high: float = option(0.28, "ratio clipped above at 1 + clip_high (DAPO's clip-higher: above clip_low)")
    kl_coef: float = option(0.0, "weight of the k3 KL(policy || reference) per token (0: no reference model)")
    loss_aggregation: str = option("token", "mean over all reply tokens of the batch (DAPO) or the mean of each "
                                   "reply's token mean (GRPO paper)", choices=("token", "sequence"))
    scale_rewards: bool = option(True, "divide each group's centred rewards by its std (false: Dr. GRPO)")
    format_reward: float = option(0.1, "added to the reward of a reply in the <think>…</think><answer>…</answer> "
                                  "format (negative: a penalty for the others instead)")
    length_penalty: float = option(0.0, "subtracted from the reward times (reply tokens / max_new_tokens)")
    value_coef: float = option(0.5, "ppo: weight of the value loss")
    value_clip: float = option(0.2, "ppo: a new value estimate may move at most this far from the rollout's")
    gamma: float = option(1.0, "ppo: discount per token")
    gae_lambda: float = option(0.95, "ppo: GAE's λ (1: Monte-Carlo returns, 0: one-step TD)")
    max_steps: int = option(200, "rollout steps to run (each: one rollout batch, --ppo_epochs updates)")
    batch_size: int = option(32, "replies per forward pass in the updates (memory, not the batch of a step)")
    lr: float = option(1e-4, "peak learning rate")
    warmup_steps: int = option(0, "linear warm-up steps (cosine schedule)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    log_interval: int = option(1, "log a metrics record every N steps")

    def __post_init__(self):
        super().__post_init__()
        if self.algorithm in ("grpo", "cispo") and self.group_size < 2:
            raise ValueError(f"--algorithm {self.algorithm} compares the replies of a group: --group_size must be "
                             f"at least 2, got {self.group_size}")
        for name in ("group_size", "prompts_per_step", "max_new_tokens", "ppo_epochs", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_prompts < 0:
            raise ValueError(f"--max_prompts must not be negative, got {self.max_prompts}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"--temperature must be > 0 (greedy rollouts would make every group identical), "
                             f"got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        # cispo's weight may be left unbounded below (clip_low = 1, TRL's form); a ratio clipped at 0 would stop grpo
        low_limit_ok = self.clip_low <= 1 if self.algorithm == "cispo" else self.clip_low < 1
        if not (0 <= self.clip_low and low_limit_ok and self.clip_high >= 0):
            raise ValueError(f"need 0 <= clip_low < 1 (<= 1 for cispo) and clip_high >= 0, got {self.clip_low}, "
                             f"{self.clip_high}")
        for name in ("kl_coef", "length_penalty", "value_coef", "value_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must not be negative, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.data_path:
            raise ValueError("--data_path: the RL stage draws its prompts from the synthetic world (--split); "
                             "pass problems to run() to use others")
        if self.resume and not self.out_dir:
            raise ValueError("--resume continues the run in --out_dir: give it")
        if self.dtype == "fp16":
            raise ValueError("--dtype fp16: the RL stage has no grad scaler; use bf16 or fp32")


# ---------------------------------------------------------------------------------------------
# The reward: a verifier, not a model


def verify(reply: str, problem) -> tuple[bool, bool]:
    """(correct, well_formed) of a reasoning reply, by the evaluation suites' own checker
    (`minimind.scoring.score_answers`): the answer block must equal `problem.answer`."""
    score = score_answers([reply], [problem.answer])
    return bool(score.correct), bool(score.well_formed)


def reward(reply: str, problem, format_reward: float = 0.0, length_penalty: float = 0.0,
           length_fraction: float = 0.0) -> float:
    """1 for a correct answer, 0 otherwise; plus `format_reward` for a well-formed reply (a negative
    `format_reward` instead charges its size to the malformed ones); minus `length_penalty` times
    `length_fraction` (the reply's tokens over the most it may have)."""
    correct, well_formed = verify(reply, problem)
    value = float(correct)
    if format_reward > 0 and well_formed:
        value += format_reward
    elif format_reward < 0 and not well_formed:
        value += format_reward
    return value - length_penalty * length_fraction


# ---------------------------------------------------------------------------------------------
# Advantages and losses: pure functions of tensors. Per-token tensors are (B, T) with a `mask`
# that is 1 on the reply tokens; advantages are (B,) per reply or (B, T) per token.


def group_advantages(rewards: torch.Tensor, group_size: int, normalize_std: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantages: each reward minus the mean of its group of `group_size` consecutive
    replies, divided by the group's (unbiased) std + eps if `normalize_std`. A group whose rewards
    are all equal teaches nothing: its advantages are exactly 0. (B,) → (B,)."""
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards {tuple(rewards.shape)} do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)  # (groups, G)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if normalize_std:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    flat = (grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True))
    return centred.masked_fill(flat, 0.0).view(-1)  # exact zeros, not float dust


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    """"token": the mean over every masked token of the batch; "sequence": each row's masked mean,
    then the mean of the rows."""
    mask = mask.to(per_token.dtype)
    if aggregation == "token":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if aggregation == "sequence":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    raise ValueError(f"aggregation must be 'token' or 'sequence', got {aggregation!r}")


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π‖π_ref) estimated from the sampled token (Schulman's k3):
    exp(ref − logp) − (ref − logp) − 1, never negative, 0 where the two agree."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def _with_kl(per_token, logps, ref_logps, mask, kl_coef, stats):
    if ref_logps is not None:
        kl = k3_kl(logps, ref_logps)
        stats["kl"] = _masked_mean(kl.detach(), mask)
        if kl_coef:
            per_token = per_token + kl_coef * kl
    return per_token


def grpo_token_loss(logps, old_logps, ref_logps, advantages, mask, clip_low: float = 0.2, clip_high: float = 0.2,
                    kl_coef: float = 0.0, aggregation: str = "token"):
    """PPO's clipped surrogate per token, −min(r·A, clip(r, 1−clip_low, 1+clip_high)·A) with
    r = π/π_old, plus kl_coef × k3 KL to the reference; aggregated over `mask`.

    Returns (loss, stats): clip_fraction (tokens whose gradient the clip removed: r below the range
    with A < 0 or above it with A > 0, as TRL counts them), ratio (mean r) and kl (if ref_logps).
    """
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    old_logps = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    stats = {}
    per_token = _with_kl(per_token, logps, ref_logps, mask, kl_coef, stats)
    with torch.no_grad():
        cut = ((ratio < 1 - clip_low) & (advantages < 0)) | ((ratio > 1 + clip_high) & (advantages > 0))
        stats["clip_fraction"] = _masked_mean(cut.float(), mask)
        stats["ratio"] = _masked_mean(ratio, mask)
    return aggregate(per_token, mask, aggregation), stats


def cispo_token_loss(logps, old_logps, ref_logps, advantages, mask, clip_low: float = 1.0, clip_high: float = 4.0,
                     kl_coef: float = 0.0, aggregation: str = "token"):
    """CISPO (MiniMax-M1, 2025; upstream MiniMind's `cispo`): −sg(clip(r, 1−clip_low, 1+clip_high))·A·log π.

    The importance weight is clipped and detached, so it only scales the REINFORCE gradient
    A·∇log π: unlike PPO's clip, no token's gradient is dropped. clip_low = 1 leaves the weight
    unbounded below (TRL's form, whose `epsilon_high` is our 1 + clip_high). Stats: clip_fraction
    (tokens whose weight was clipped), ratio, kl (if ref_logps).
    """
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    old_logps = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old_logps)
    weight = torch.clamp(ratio, 1 - clip_low, 1 + clip_high).detach()
    per_token = -weight * advantages * logps
    stats = {}
    per_token = _with_kl(per_token, logps, ref_logps, mask, kl_coef, stats)
    with torch.no_grad():
        stats["clip_fraction"] = _masked_mean((weight != ratio).float(), mask)
        stats["ratio"] = _masked_mean(ratio, mask)
    return aggregate(per_token, mask, aggregation), stats


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each row's masked tokens.

    δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}; past the last masked token of a row the
    episode has ended (V = 0, A = 0). Returns (advantages, returns = advantages + values), both
    (B, T) and 0 off the mask. All inputs (B, T); the reply tokens of a row are contiguous.
    """
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        next_mask = mask[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(running)
        next_value = values[:, t + 1] * next_mask if t + 1 < values.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_mask * running
        advantages[:, t] = running * mask[:, t]
    return advantages, (advantages + values) * mask


def ppo_value_loss(values, old_values, returns, mask, clip: float = 0.2) -> torch.Tensor:
    """PPO's clipped value loss, a masked token mean of ½·max((V − R)², (V_old + clip(V − V_old, ±clip) − R)²)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    per_token = 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    return _masked_mean(per_token, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, total=None) -> torch.Tensor:
    """(x − mean) / std over the masked entries (PPO's advantage normalisation); 0 off the mask.
    total(t): the sum of tensor t over every process (under torchrun the batch is split)."""
    total = total or (lambda t: t)
    mask_f = mask.to(x.dtype)
    count = total(mask_f.sum()).clamp(min=1.0)
    mean = total((x * mask_f).sum()) / count
    var = total((((x - mean) ** 2) * mask_f).sum()) / count
    return (x - mean) / torch.sqrt(var + eps) * mask_f


class ValueHead(nn.Module):
    """PPO's critic: one Linear from the policy's final hidden state to a scalar value per position."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)  # starts predicting 0: no noise in the first advantages
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class Rollout:
    """One batch of sampled replies, right-padded: row i is prompt i // G, reply i % G."""

    input_ids: torch.Tensor  # (N, T) prompt + reply (+ its end token) + padding
    mask: torch.Tensor  # (N, T) bool: the reply tokens, the ones the policy chose
    rewards: torch.Tensor  # (N,)
    correct: torch.Tensor  # (N,) bool
    well_formed: torch.Tensor  # (N,) bool
    finished: torch.Tensor  # (N,) bool: ended with the end token, not cut at max_new_tokens
    replies: list[str]


def sample_rollout(model, tokenizer, problems: Sequence, config: RLConfig, seed: int, first_row: int = 0) -> Rollout:
    """Sample `config.group_size` replies to each problem and score them with `reward`.

    Row i of the rollout is sampled with a generator of its own, seeded from `seed` and its index
    `first_row + i` in the step's whole batch, so a reply is the same whichever process samples it
    (the step's prompts split over torchrun's processes give the replies one process would)."""
    from minimind.generate import SamplingParams, generate_batch

    group = config.group_size
    prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": p.prompt}]) for p in problems]
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                            max_new_tokens=config.max_new_tokens)
    rows_in_rollout = len(prompts) * group
    row_seeds = [(seed << 20) + first_row + row for row in range(rows_in_rollout)]  # rows < 2**20 a step
    was_training = model.training
    model.eval()
    try:
        replies_ids = generate_batch(model, [ids for ids in prompts for _ in range(group)], params,
                                     row_seeds=row_seeds)
    finally:
        model.train(was_training)
    rows, texts, rewards, correct, well_formed, finished = [], [], [], [], [], []
    for index, reply_ids in enumerate(replies_ids):
        problem = problems[index // group]
        # max_new_tokens counts the end token, so a shorter reply ended on it: the policy chose to
        # stop, and that choice is trained too
        ended = len(reply_ids) < config.max_new_tokens
        response = list(reply_ids) + ([EOS_ID] if ended else [])
        text = tokenizer.decode(reply_ids, skip_special_tokens=False)
        ok, formed = verify(text, problem)
        rewards.append(reward(text, problem, config.format_reward, config.length_penalty,
                              len(response) / config.max_new_tokens))
        rows.append((prompts[index // group], response))
        texts.append(text), correct.append(ok), well_formed.append(formed), finished.append(ended)
    length = max(len(p) + len(r) for p, r in rows)
    input_ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for row, (prompt, response) in enumerate(rows):
        input_ids[row, :len(prompt) + len(response)] = torch.tensor(prompt + response)
        mask[row, len(prompt):len(prompt) + len(response)] = True
    as_bool = lambda values: torch.tensor(values, dtype=torch.bool)  # noqa: E731
    return Rollout(input_ids, mask, torch.tensor(rewards), as_bool(correct), as_bool(well_formed),
                   as_bool(finished), texts)


def token_logps(model, input_ids, mask, temperature: float = 1.0, value_head: Optional[ValueHead] = None):
    """Log-prob of each masked token under `model` (logits / temperature), the entropy of the
    distribution it was drawn from, and the value head's estimate there (or None); each (B, T),
    0 off the mask. The LM head runs only where a masked token is predicted. Also the MoE aux loss."""
    predict_at = torch.zeros_like(mask)
    predict_at[:, :-1] = mask[:, 1:]  # position t-1 predicts token t
    out = model(input_ids, logits_at=predict_at)
    log_probs = F.log_softmax(out.logits.float() / temperature, dim=-1)  # (K, V), K masked tokens
    picked = log_probs.gather(1, input_ids[mask].unsqueeze(1)).squeeze(1)  # (K,)
    logps = picked.new_zeros(mask.shape).index_put((mask,), picked)
    with torch.no_grad():
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        entropies = entropy.new_zeros(mask.shape).index_put((mask,), entropy)
    values = None
    if value_head is not None:
        estimate = value_head(out.hidden_states[predict_at])  # (K,)
        values = estimate.new_zeros(mask.shape).index_put((mask,), estimate)
    aux = out.aux_loss if out.aux_loss is not None else logps.new_zeros(())
    return logps, entropies, values, aux


# ---------------------------------------------------------------------------------------------
# The loop


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` that needs no gradient: the KL reference."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def default_problems(config: RLConfig) -> list:
    from minimind.data.synthetic import build_world

    problems = build_world(0).problems(config.split)  # world 0: the one data/ holds and the zoo trains on
    return problems[:config.max_prompts] if config.max_prompts else problems


class _Trainer:
    """A rollout batch in, `ppo_epochs` optimizer updates out, one metrics record. Under torchrun
    each process holds its share of the step's rollout; losses are weighted by their share of the
    whole batch and the gradients summed over the processes, so the update is the one-process one."""

    def __init__(self, config: RLConfig, model, reference, value_head, optimizer, device, dtype, ddp=None):
        from minimind.runtime import Distributed

        self.config, self.model, self.reference, self.value_head = config, model, reference, value_head
        self.optimizer, self.device, self.dtype = optimizer, device, dtype
        self.ddp = ddp or Distributed()
        self.trainable = [p for group in optimizer.param_groups for p in group["params"]]

    def _total(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over the processes (itself in one process)."""
        if self.ddp.enabled:
            tensor = tensor.clone()
            torch.distributed.all_reduce(tensor)
        return tensor

    def _forward(self, module, rows, rollout, value_head=None):
        ids, mask = rollout.input_ids[rows].to(self.device), rollout.mask[rows].to(self.device)
        with autocast_context(self.device, self.dtype):
            return token_logps(module, ids, mask, self.config.temperature, value_head)

    def _chunks(self, n: int):
        size = self.config.batch_size
        return [torch.arange(start, min(start + size, n)) for start in range(0, n, size)]

    @torch.no_grad()
    def _before_updates(self, rollout: Rollout) -> dict:
        """What stays fixed over the updates: old log-probs and values, reference log-probs, advantages."""
        config, n = self.config, len(rollout.rewards)
        mask = rollout.mask.to(self.device)
        fixed = {"old_logps": None, "ref_logps": None, "old_values": None}
        need_old = config.ppo_epochs > 1 or config.algorithm == "ppo"
        parts = {key: [] for key in fixed}
        for rows in self._chunks(n):
            if need_old:
                logps, _, values, _ = self._forward(self.model, rows, rollout, self.value_head)
                parts["old_logps"].append(logps)
                parts["old_values"].append(values)
            if self.reference is not None:
                parts["ref_logps"].append(self._forward(self.reference, rows, rollout)[0])
        for key, pieces in parts.items():
            if pieces and pieces[0] is not None:
                fixed[key] = torch.cat(pieces)  # every chunk has the rollout's full width T
        rewards = rollout.rewards.to(self.device)
        if config.algorithm == "ppo":
            # the whole reward arrives with the last token of the reply
            last = mask.long().cumsum(-1).argmax(-1)  # (N,) index of the last reply token
            token_rewards = torch.zeros(mask.shape, device=self.device)
            token_rewards[torch.arange(n, device=self.device), last] = rewards
            advantages, returns = gae(token_rewards, fixed["old_values"], mask, config.gamma, config.gae_lambda)
            fixed["advantages"], fixed["returns"] = whiten(advantages, mask, total=self._total), returns
        else:
            # a group never spans two processes: each holds whole groups
            fixed["advantages"] = group_advantages(rewards, config.group_size, config.scale_rewards)
        return fixed

    def step(self, rollout: Rollout, lr: float, step: int) -> dict:
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        fixed = self._before_updates(rollout)
        mask_all = rollout.mask.to(self.device)
        n_here = len(rollout.rewards)
        n = n_here * self.ddp.world_size  # every process holds as many replies
        tokens = self._total(mask_all.sum().float()).item()
        objective = grpo_token_loss if config.algorithm in ("grpo", "ppo") else cispo_token_loss
        sums: dict[str, float] = {}
        for epoch in range(config.ppo_epochs):
            loss_check = torch.zeros((), device=self.device)
            for rows in self._chunks(n_here):
                rows_d = rows.to(self.device)
                mask = mask_all[rows_d]
                # this chunk's share of the batch mean, so chunks add up to the loss of the whole batch
                share = (mask.sum().item() / tokens) if config.loss_aggregation == "token" else len(rows) / n
                token_share = mask.sum().item() / tokens
                logps, entropy, values, aux = self._forward(self.model, rows, rollout, self.value_head)
                pick = lambda key: None if fixed.get(key) is None else fixed[key][rows_d]  # noqa: E731
                loss, stats = objective(logps, pick("old_logps"), pick("ref_logps"), fixed["advantages"][rows_d],
                                        mask, config.clip_low, config.clip_high, config.kl_coef,
                                        config.loss_aggregation)
                total = loss * share + aux * len(rows) / n
                if config.algorithm == "ppo":
                    value_loss = ppo_value_loss(values, fixed["old_values"][rows_d], fixed["returns"][rows_d], mask,
                                                config.value_clip)
                    total = total + config.value_coef * value_loss * token_share
                    stats["value_loss"] = value_loss.detach()
                loss_check = loss_check + total.detach().float()
                if not self.ddp.enabled and not math.isfinite(total.item()):
                    break  # reported below, before any update
                total.backward()
                stats["loss"] = loss.detach()
                if epoch == 0:
                    stats["entropy"] = _masked_mean(entropy, mask)
                for name, value in stats.items():  # batch means, averaged over the updates
                    weight = share if name == "loss" else token_share
                    passes = 1 if name == "entropy" else config.ppo_epochs  # entropy: of the first pass only
                    sums[name] = sums.get(name, 0.0) + float(value) * weight / passes
            loss_check = self._total(loss_check).item()  # every process stops, or none
            if not math.isfinite(loss_check):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(f"loss is {loss_check} at RL step {step + 1}, update {epoch + 1}; "
                                         "lower --lr or use --dtype fp32")
            if self.ddp.enabled:
                for parameter in self.trainable:
                    if parameter.grad is None:
                        parameter.grad = torch.zeros_like(parameter)
                    torch.distributed.all_reduce(parameter.grad)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.trainable, config.grad_clip if config.grad_clip > 0 else math.inf)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        names = sorted(sums)
        reduced = self._total(torch.tensor([sums[name] for name in names], dtype=torch.float64)).tolist()
        groups = rollout.rewards.view(-1, config.group_size)
        rollout_sums = self._total(torch.tensor([
            rollout.rewards.sum().item(), rollout.correct.sum().item(), rollout.well_formed.sum().item(),
            rollout.finished.sum().item(), rollout.mask.sum().item(),
            (groups.amax(1) == groups.amin(1)).sum().item()], dtype=torch.float64)).tolist()
        reward_sum, correct, formed, finished, reply_tokens, flat = rollout_sums
        return {
            "reward": reward_sum / n,
            "accuracy": correct / n,
            "format_rate": formed / n,
            "finished_rate": finished / n,
            "response_len": reply_tokens / n,
            "zero_variance_groups": flat / (n // config.group_size),
            "grad_norm": float(grad_norm),
            **dict(zip(names, reduced)),
        }


def prompt_indices(seed: int, n_problems: int, start: int, count: int) -> list[int]:
    """The problems at positions start … start + count − 1 of the run's prompt stream: pass k over
    the problems is a permutation seeded by (seed, k), so any step's prompts are known without
    replaying the steps before it (what resume needs)."""
    indices, cache = [], {}
    for position in range(start, start + count):
        epoch, offset = divmod(position, n_problems)
        if epoch not in cache:
            cache[epoch] = random.Random(seed * 1_000_003 + epoch).sample(range(n_problems), n_problems)
        indices.append(cache[epoch][offset])
    return indices


def _trained_state(model, value_head) -> dict:
    """The fp32 weights a resume file keeps: the policy's, and the value head's under `value_head.`."""
    state = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    if value_head is not None:
        state.update({f"value_head.{k}": v.detach().cpu() for k, v in value_head.state_dict().items()})
    return state


def _load_trained_state(state: dict, model, value_head, path: Path) -> None:
    def part(prefix):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    if value_head is None and part("value_head."):
        raise ValueError(f"{path}: saved by a run with a value head (--algorithm ppo); resume it with ppo")
    if value_head is not None and not part("value_head."):
        raise ValueError(f"{path}: saved by a run without a value head; --algorithm ppo cannot resume it")
    model.load_state_dict(part("model."))
    if value_head is not None:
        value_head.load_state_dict(part("value_head."))


def _save(model, value_head, out_dir: Path) -> None:
    from minimind.checkpoint import save_model

    save_model(model, out_dir)
    if value_head is not None:
        from safetensors.torch import save_file

        from minimind.files import atomic_write

        state = {k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}
        atomic_write(out_dir / VALUE_HEAD_FILE, lambda temp: save_file(state, temp))


def _checkpoint(model, value_head, optimizer, state: TrainState, config: RLConfig, ddp, out_dir: Path) -> None:
    """The weights, then `resume.pt` (rank 0 writes; every rank contributes its RNG states)."""
    import torch.distributed as dist

    rng_states = [rng_state()]
    if ddp.enabled:
        rng_states = [None] * ddp.world_size
        dist.all_gather_object(rng_states, rng_state())
    if not ddp.is_main:
        return
    _save(model, value_head, out_dir)
    Resume(state=state, model=_trained_state(model, value_head), optimizer=optimizer.state_dict(), scaler=None,
           rng=rng_states, batch_size=config.prompts_per_step, grad_accum=config.group_size,
           world_size=ddp.world_size, config=config.to_dict()).save(out_dir / RESUME_FILE)


def run(config: RLConfig, *, model: Optional[nn.Module] = None, tokenizer=None, problems: Optional[Sequence] = None,
        callbacks=()) -> TrainResult:
    """RL from `config.init_from` (or the given model) on `problems` (objects with .prompt and
    .answer; default: the synthetic world's `--split`); returns the TrainResult.

    Under torchrun each process samples and trains on prompts_per_step / world_size of each
    step's prompts (whole groups), with the replies and the update one process would compute.
    `--resume` continues from `out_dir/resume.pt`: the prompts of a step and the seeds of its
    replies depend only on the step, so the resumed run continues the uninterrupted one."""
    from minimind.runtime import init_distributed

    if model is None and not config.init_from:
        raise ValueError("RL starts from a reasoning model: pass --init_from DIR")
    problems = list(default_problems(config) if problems is None else problems)
    if not problems:
        raise ValueError("no prompts to train on: the problem list is empty")
    device = resolve_device(config.device, training=True)
    dtype = resolve_dtype(config.dtype, device, training=True)
    ddp = init_distributed(device)
    try:
        if config.prompts_per_step % ddp.world_size:
            raise ValueError(f"--prompts_per_step {config.prompts_per_step} does not split over {ddp.world_size} "
                             "processes: each must hold whole groups of the same number of prompts")
        return _run(config, model, tokenizer, problems, callbacks, device, dtype, ddp)
    finally:
        ddp.close()


def _run(config, model, tokenizer, problems, callbacks, device, dtype, ddp) -> TrainResult:
    import torch.distributed as dist

    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    if model is None:
        model = build_model(config)
    check_vocabulary(tokenizer, model)
    out_dir = Path(config.out_dir) if config.out_dir else None
    resume_path = out_dir / RESUME_FILE if out_dir is not None else None
    problem = existing_run_problem(out_dir, config.resume, config.overwrite) if ddp.is_main else None
    if ddp.enabled:  # rank 0 decides for everyone, so no rank waits for a refused run
        decision = [problem]
        dist.broadcast_object_list(decision, src=0)
        problem = decision[0]
    if problem is not None:
        raise ValueError(problem)

    seed_everything(config.seed)
    model.to(device).train()
    reference = frozen_copy(model) if config.kl_coef > 0 else None  # the starting model, also on resume
    value_head = ValueHead(model.config.hidden_size).to(device) if config.algorithm == "ppo" else None
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if value_head is not None:
        named += [(f"value_head.{n}", p) for n, p in value_head.named_parameters()]
    optimizer = torch.optim.AdamW(param_groups(named, config.weight_decay, config.decay_norms_and_embeddings),
                                  lr=config.lr, betas=(config.beta1, config.beta2))
    state, resumed = TrainState(), None
    if config.resume and resume_path is not None and resume_path.exists():
        resumed = Resume.load(resume_path)
        for name, saved, now in (("prompts_per_step", resumed.batch_size, config.prompts_per_step),
                                 ("group_size", resumed.grad_accum, config.group_size),
                                 ("processes (torchrun)", resumed.world_size, ddp.world_size)):
            if saved != now:
                raise ValueError(f"{resume_path}: saved with {name} {saved}, now {now}; resume needs the same "
                                 "layout to continue the same rollouts")
        _load_trained_state(resumed.model, model, value_head, resume_path)
        optimizer.load_state_dict(resumed.optimizer)
        state = resumed.state
    seed_everything(config.seed + ddp.rank)
    if resumed is not None:
        set_rng_state(resumed.rng[ddp.rank])
    trainer = _Trainer(config, model, reference, value_head, optimizer, device, dtype, ddp)

    if out_dir is not None and ddp.is_main:
        from minimind.files import remove_temp_files

        out_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(out_dir)
        write_train_config(out_dir, config.to_dict())
        tokenizer.save(out_dir)
        if resumed is not None:  # weights and resume file agree even if a crash came between their writes
            _save(model, value_head, out_dir)
    metrics_path = Path(config.metrics_file) if config.metrics_file else (out_dir / METRICS_FILE if out_dir else None)
    log = MetricsLog(metrics_path if ddp.is_main else None,
                     keep_up_to_step=state.step if resumed is not None else None,
                     report_to=config.report_to if ddp.is_main else "none", run_config=config.to_dict())
    bar = None
    if config.progress and ddp.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=state.step, desc=f"rl ({config.algorithm})", dynamic_ncols=True)

    per_rank = config.prompts_per_step // ddp.world_size
    start, record = time.perf_counter(), {}
    while state.step < config.max_steps:
        step = state.step
        indices = prompt_indices(config.seed, len(problems), step * config.prompts_per_step, config.prompts_per_step)
        mine = indices[ddp.rank * per_rank:(ddp.rank + 1) * per_rank]
        rollout_start = time.perf_counter()
        rollout = sample_rollout(model, tokenizer, [problems[i] for i in mine], config,
                                 seed=config.seed * 1_000_003 + step, first_row=ddp.rank * per_rank * config.group_size)
        rollout_s = time.perf_counter() - rollout_start
        lr = learning_rate_at(step, config.max_steps, config)
        record = trainer.step(rollout, lr, step)
        state.step += 1
        real = rollout.mask.long().cumsum(-1).argmax(-1) + 1  # each row's prompt + reply, without padding
        state.tokens += int(trainer._total(real.sum().double()).item())
        state.epoch = state.step * config.prompts_per_step // len(problems)
        record = {"step": state.step, "epoch": round(state.step * config.prompts_per_step / len(problems), 4),
                  "loss": record.pop("loss"), "lr": lr, **record, "tokens": state.tokens,
                  "rollout_s": rollout_s, "elapsed_s": time.perf_counter() - start}
        info = StepInfo(state.step, config.max_steps, record["epoch"], record["loss"], lr, model, record)
        extra = {}
        for callback in callbacks:
            extra.update(callback(info) or {})
        if state.step % config.log_interval == 0 or state.step == config.max_steps or extra:
            log.append({**record, **extra})
        if bar is not None:
            bar.set_postfix(reward=f"{record['reward']:.3f}", acc=f"{record['accuracy']:.2f}", refresh=False)
            bar.update(1)
        if (out_dir is not None and config.save_interval and state.step % config.save_interval == 0
                and state.step < config.max_steps):
            _checkpoint(model, value_head, optimizer, state, config, ddp, out_dir)
    if bar is not None:
        bar.close()
    log.close()
    if out_dir is not None:
        _checkpoint(model, value_head, optimizer, state, config, ddp, out_dir)
    return TrainResult(model=model, steps=state.step, final_loss=record.get("loss", float("nan")),
                       records=log.records, out_dir=out_dir, tokens=state.tokens)


def main(argv=None):
    config = parse_config(RLConfig, argv, prog="python -m minimind.train.rl")
    result = run(config)
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun rank 0 reports, as it alone writes
        return 0
    last = result.records[-1] if result.records else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("reward", "accuracy", "format_rate") if k in last)
    print(f"RL ({config.algorithm}) done: {result.steps} steps, {summary}"
          + (f"; saved to {result.out_dir}" if result.out_dir else ""))
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.rl", main))
