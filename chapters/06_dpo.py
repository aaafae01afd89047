# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 6 — Preference optimisation with DPO
#
# Supervised fine-tuning teaches a model *what* to say by imitation: every reply in the data is
# a target. But the SFT data of chapter 5 mixes two styles of the same answer — a polite one
# ("Sure! … Hope this helps!") and a curt one ("Ugh, fine. … Now leave me alone.") — as scraped
# chat data mixes good and bad replies, and the model imitated both. This chapter teaches it
# which of two replies *people prefer*, with Direct Preference Optimization (DPO): a loss that
# turns pairs "this reply is better than that one" into gradient steps, without a separate
# reward model and without reinforcement learning. We derive it from a model of human
# choice, build it, check it against `minimind` and TRL's conventions, and train the book's
# SFT model on the synthetic preference pairs.
#
# **Learning objectives**
#
# - Write the Bradley–Terry model of pairwise preference and derive the DPO loss from the
#   KL-regularised reward objective.
# - Compute a sequence's log-probability from the logits with the right shift and mask.
# - Implement the DPO loss, explain its value ln 2 at the start and the direction of its gradient.
# - Choose between summed and averaged log-probabilities, and between a frozen reference model and
#   reference log-probabilities computed once.
# - Measure preference accuracy on held-out pairs, and check that the model's other skills survive.
# - Explain what β does, from a sweep.
#
# **Estimated time:** 60–90 minutes. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %%
import copy
import dataclasses
import math
import random
import re
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import minimind
from minimind import zoo
from minimind.runtime import cpu_threads
from minimind.checks.bands import expect, expect_outside
from minimind.data.datasets import DPODataset, collate_dpo
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import is_correct, reply_style
from minimind.generate import generate_batch
from minimind.losses import dpo_loss, sequence_logps
from minimind.train.dpo import DPOConfig, pair_logps, run

random.seed(0)
torch.manual_seed(0)
# Every core (MINIMIND_THREADS overrides it; `make test` runs one chapter per core on one thread each).
# Figures that float rounding moves differ a little on another CPU or thread count, so the chapter
# asserts them against bands measured across seeds and kernel paths (minimind.checks.bands).
torch.set_num_threads(cpu_threads())
print(f"torch {torch.__version__} · minimind {minimind.__version__}")

# %% [markdown]
# ## 1. The data: one prompt, two replies
#
# Each row of `dpo_train.jsonl` holds the same conversation twice, ending in a *chosen* and a
# *rejected* assistant reply. The book's world makes the difference a surface property a tiny model
# can pick up and generalise — politeness — and keeps the facts identical in both replies, so the
# preference cannot be learned by memorising facts. The training pairs are about the people the SFT data
# covered; the held-out pairs in `dpo_val.jsonl` are about the *other* people, with prompts the
# model has never been trained to answer politely.

# %% tags=["nbval-check-output"]
tokenizer = zoo.tokenizer()
world = build_world(0)
train_rows = list(read_jsonl(dataset_path("dpo", "train"), "dpo"))
val_rows = list(read_jsonl(dataset_path("dpo", "val"), "dpo"))
print(f"{len(train_rows)} training pairs, {len(val_rows)} held-out pairs")
example = train_rows[2]
print("prompt:  ", example["chosen"][0]["content"])
print("chosen:  ", example["chosen"][-1]["content"])
print("rejected:", example["rejected"][-1]["content"])
print("styles:  ", reply_style(example["chosen"][-1]["content"]), "/", reply_style(example["rejected"][-1]["content"]))

# %% [markdown]
# ## 2. Bradley–Terry: a model of preferences
#
# People do not give replies absolute scores; they compare. Bradley and Terry
# {cite}`bradley1952rank` modelled a comparison as a contest of hidden strengths: if reply $y$
# has reward $r(x, y)$ for prompt $x$, then
#
# $$P(y_w \succ y_l \mid x) = \frac{e^{r(x, y_w)}}{e^{r(x, y_w)} + e^{r(x, y_l)}} = \sigma\big(r(x, y_w) - r(x, y_l)\big),$$
#
# with $\sigma(z) = 1/(1+e^{-z})$. Only the *difference* of rewards matters: adding a constant to
# every reward of a prompt changes nothing. Fitting $r$ to a set of preferences
# $(x, y_w, y_l)$ by maximum likelihood means minimising
#
# $$\mathcal{L}_R = -\mathbb{E}_{(x, y_w, y_l)}\big[\log \sigma\big(r(x, y_w) - r(x, y_l)\big)\big].$$

# %% tags=["nbval-check-output"]
def bradley_terry(reward_a: torch.Tensor, reward_b: torch.Tensor) -> torch.Tensor:
    """P(a is preferred over b) = σ(r_a − r_b): stable for any size of rewards."""
    return torch.sigmoid(reward_a - reward_b)


rewards = torch.tensor([0.0, 1.0, 3.0])
for gap in rewards:
    print(f"reward gap {gap.item():.0f} → P(preferred) = {bradley_terry(gap, torch.tensor(0.0)).item():.3f}")
assert torch.allclose(bradley_terry(rewards + 50, torch.tensor(50.0)), bradley_terry(rewards, torch.tensor(0.0)))

# %% [markdown]
# ## 3. From a reward to DPO
#
# RLHF {cite}`ouyang2022instructgpt` fits such a reward model, then trains the policy $\pi_\theta$ to
# collect reward without drifting far from the SFT model $\pi_\text{ref}$:
#
# $$\max_{\pi}\; \mathbb{E}_{x,\, y \sim \pi(\cdot\mid x)}\big[r(x, y)\big] - \beta\, \mathrm{KL}\big(\pi(\cdot\mid x)\,\|\,\pi_\text{ref}(\cdot\mid x)\big).$$
#
# This objective has a closed-form maximiser. Writing the KL as an expectation and collecting terms,
# it equals $-\beta\,\mathrm{KL}\big(\pi \,\|\, \pi_\text{ref}\, e^{r/\beta} / Z(x)\big) + \beta \log Z(x)$
# with the normaliser $Z(x) = \sum_y \pi_\text{ref}(y\mid x)\, e^{r(x,y)/\beta}$, so the best policy is
#
# $$\pi^*(y \mid x) = \frac{1}{Z(x)}\, \pi_\text{ref}(y \mid x)\, e^{r(x, y)/\beta}.$$
#
# Rafailov et al. {cite}`rafailov2023dpo` read this equation the other way round: any policy defines
# the reward it is optimal for,
#
# $$r(x, y) = \beta \log \frac{\pi(y \mid x)}{\pi_\text{ref}(y \mid x)} + \beta \log Z(x).$$
#
# $Z(x)$ is intractable — a sum over every possible reply — but Bradley–Terry only ever looks at a
# *difference* of two rewards for the same prompt, and there $\beta \log Z(x)$ cancels. Substituting
# into $\mathcal{L}_R$ gives a loss on the policy itself, with no reward model and no sampling:
#
# $$\mathcal{L}_\text{DPO} = -\mathbb{E}\Big[\log \sigma\Big(\underbrace{\beta \log \frac{\pi_\theta(y_w\mid x)}{\pi_\text{ref}(y_w\mid x)}}_{\hat r_w} - \underbrace{\beta \log \frac{\pi_\theta(y_l\mid x)}{\pi_\text{ref}(y_l\mid x)}}_{\hat r_l}\Big)\Big].$$
#
# $\hat r_w, \hat r_l$ are the *implicit rewards*; their difference is the *reward margin*, and the
# fraction of pairs with a positive margin is the *preference accuracy* that training logs.
# At the start $\pi_\theta = \pi_\text{ref}$, both implicit rewards are 0 and the loss is
# $-\log \sigma(0) = \ln 2 \approx 0.6931$ for every pair — a DPO run whose loss never leaves
# 0.693 is not training (a frequent question upstream).
#
# The gradient shows what the loss does:
#
# $$\nabla_\theta \mathcal{L}_\text{DPO} = -\beta\, \mathbb{E}\Big[\sigma(\hat r_l - \hat r_w)\,\big(\nabla_\theta \log \pi_\theta(y_w\mid x) - \nabla_\theta \log \pi_\theta(y_l\mid x)\big)\Big]:$$
#
# raise the chosen reply's log-probability, lower the rejected one's, weighted by how wrong the
# implicit reward model currently is ($\sigma(\hat r_l - \hat r_w)$ is near 1 for pairs it ranks
# the wrong way round and near 0 for pairs it already ranks with a wide margin).

# %% [markdown]
# ## 4. Building it: sequence log-probabilities, then the loss
#
# $\log \pi(y \mid x)$ is the sum, over the reply's tokens, of each token's log-probability given
# everything before it. Two details decide whether it is right. **The shift**: the logits at
# position $t-1$ predict token $t$. **The mask**: only the reply's tokens count — not the system
# prompt, not the user turn, not the padding. The DPO dataset returns the same loss mask as SFT
# (`render_conversation` marks the assistant reply, its `<|im_end|>` and the newline after it).

# %% tags=["nbval-check-output"]
def sequence_logps_scratch(logits, ids, mask):
    """Σ_t log p(ids[t] | ids[<t]) over the positions t the mask marks; logits (B, T, V), ids/mask (B, T)."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)        # (B, T-1, V): predictions for ids[:, 1:]
    targets = ids[:, 1:]
    token_logps = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (token_logps * mask[:, 1:]).sum(dim=1)


def dpo_loss_scratch(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta):
    """−log σ(β·[(log π_w − log π_ref,w) − (log π_l − log π_ref,l)]), averaged over pairs (Eq. 7 of the paper)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()


train_pairs = DPODataset(dataset_path("dpo", "train"), tokenizer, max_seq_len=DPOConfig().max_seq_len)
batch = collate_dpo([train_pairs[i] for i in range(8)])
print("one batch:", {k: tuple(v.shape) for k, v in batch.items()})
first_reply = batch["chosen_ids"][0][batch["chosen_mask"][0]]
print("supervised tokens of the first chosen reply:", repr(tokenizer.decode(first_reply.tolist())))

# %% [markdown]
# Now the check: the SFT model is the reference, and a slightly perturbed copy plays the policy so
# that the two differ. The notebook's functions and `minimind`'s must agree.

# %%
reference = zoo.sft()
policy = copy.deepcopy(reference)
with torch.no_grad():
    generator = torch.Generator().manual_seed(0)
    for parameter in policy.parameters():
        parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.01)

with torch.no_grad():
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    policy_logps_ours = sequence_logps_scratch(policy(ids).logits, ids, mask)
    reference_logps_ours = sequence_logps_scratch(reference(ids).logits, ids, mask)
    policy_logps_lib = sequence_logps(policy(ids).logits, ids, mask)
    reference_logps_lib = sequence_logps(reference(ids).logits, ids, mask)
torch.testing.assert_close(policy_logps_ours, policy_logps_lib, rtol=1e-5, atol=1e-4)
torch.testing.assert_close(reference_logps_ours, reference_logps_lib, rtol=1e-5, atol=1e-4)

beta = 0.1
ours = dpo_loss_scratch(*policy_logps_ours.chunk(2), *reference_logps_ours.chunk(2), beta)
theirs, metrics = dpo_loss(*policy_logps_lib.chunk(2), *reference_logps_lib.chunk(2), beta)
torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
at_start, _ = dpo_loss(*reference_logps_lib.chunk(2), *reference_logps_lib.chunk(2), beta)
print(f"log π(chosen) of the first pairs: {[round(v, 2) for v in policy_logps_lib[:3].tolist()]}")
print(f"DPO loss, notebook {ours.item():.4f} = minimind {theirs.item():.4f}; policy = reference: {at_start.item():.4f}"
      f" (ln 2 = {math.log(2):.4f})")
print({name: round(value.item(), 4) for name, value in metrics.items()})
assert abs(at_start.item() - math.log(2)) < 1e-6

# %% [markdown]
# The unit tests (`tests/test_dpo.py`) go further: `minimind.losses.dpo_loss` and `sequence_logps`
# give the same loss, metrics and parameter gradients as TRL's `DPOTrainer` on a transformers Llama
# — for summed log-probs, length-averaged ones (TRL's `sigmoid_norm`), an added SFT term, and label
# smoothing.

# %% [markdown]
# ## 5. Sum or mean of the token log-probabilities?
#
# $\log \pi(y\mid x)$ is a *sum*, so it is more negative for longer replies. Upstream MiniMind
# switched between the sum and the mean over the reply's tokens (issues #298 and #659): the mean
# makes pairs of different lengths weigh alike; the sum is the quantity the derivation above is
# about. `minimind` offers both (`--logps sum|mean`) and defaults to the **sum**, for three reasons:
#
# 1. Only the sum makes $\hat r$ a log-ratio of *sequence* probabilities, so β keeps its meaning
#    as the strength of the KL penalty towards $\pi_\text{ref}$.
# 2. The length bias is smaller than it looks: the reward is a log-*ratio* against the reference,
#    and the reference sees the same lengths, so what counts is how much each token *moved*.
# 3. With the mean every token's log-ratio is divided by the reply length (about 40 tokens here), so
#    the same β weighs the preference about that many times less against the rest of the loss (the
#    SFT term of section 10), and the margins grow that much more slowly; you would have to raise β
#    by that factor.
#
# Here are the lengths the two styles actually have:

# %% tags=["nbval-check-output"]
lengths = {"chosen": [], "rejected": []}
for index in range(len(train_pairs)):
    pair = train_pairs[index]
    for name in lengths:
        lengths[name].append(int(pair[f"{name}_mask"][1:].sum()))
mean_length = {name: sum(values) / len(values) for name, values in lengths.items()}
print(f"reply tokens: chosen {mean_length['chosen']:.1f}, rejected {mean_length['rejected']:.1f} on average")

# %% [markdown]
# ## 6. The reference: a frozen model, or numbers computed once?
#
# The reference enters the loss only through $\log \pi_\text{ref}(y_w\mid x)$ and
# $\log \pi_\text{ref}(y_l\mid x)$ — two numbers per pair, and they never change. Upstream keeps a
# second copy of the model and runs it on every batch. `minimind.train.dpo` can do that
# (`--reference model`), but by default computes the table once, before training
# (`--reference precomputed`): no second model in memory, and no reference forward pass in any step.
# The table costs one forward pass over the data — exactly the reference passes of one epoch — so
# it saves compute from the second epoch on, and memory always. Both modes must train identically;
# we run a few steps of each, compare the losses, count the model's forward passes per step, and
# time the steps (the times depend on the machine and on what else it runs, so they are printed,
# not asserted).

# %%
import statistics

from torch.nn.modules.module import register_module_forward_hook

model_calls = []  # one entry per forward pass of any MiniMind, policy or reference
count_calls = register_module_forward_hook(
    lambda module, args, output: model_calls.append(1) if isinstance(module, minimind.model.MiniMind) else None)
probe_steps = 12
probe = dict(max_steps=probe_steps, out_dir="", progress=False, log_interval=1, seed=0)
timings, probe_losses, calls_per_step = {}, {}, {}
for mode in ("model", "precomputed"):
    marks = []  # the call count after each optimizer step
    start = time.perf_counter()
    result = run(DPOConfig(reference=mode, **probe), model=zoo.sft(), tokenizer=tokenizer,
                 callbacks=[lambda info: marks.append(len(model_calls))])
    calls_per_step[mode] = sorted({after - before for before, after in zip(marks, marks[1:])})
    total = time.perf_counter() - start
    clock = [0.0] + [record["elapsed_s"] for record in result.records]  # the engine's clock starts at step 1
    timings[mode] = {"per_step": statistics.median(b - a for a, b in zip(clock, clock[1:])),
                     "setup": total - clock[-1]}
    probe_losses[mode] = [record["loss"] for record in result.records]
    print(f"reference={mode:<11}: {1000 * timings[mode]['per_step']:.0f} ms per step (median), "
          f"{timings[mode]['setup']:.1f} s before the first step (loading, and the table if precomputed)")
speedup = timings["model"]["per_step"] / timings["precomputed"]["per_step"]
full_steps = DPOConfig().epochs * (len(train_pairs) // DPOConfig().batch_size)
projected = {mode: t["setup"] + full_steps * t["per_step"] for mode, t in timings.items()}
print(f"per step, the precomputed reference is {speedup:.2f}x faster; projected over the default run "
      f"({full_steps} steps): {projected['model']:.0f} s with a frozen model, {projected['precomputed']:.0f} s precomputed")
count_calls.remove()

# %% tags=["nbval-check-output"]
parameter_bytes = sum(p.numel() * p.element_size() for p in reference.parameters())
table_bytes = 2 * len(train_pairs) * 4
print(f"losses of the two modes agree: {all(abs(a - b) < 1e-5 for a, b in zip(*probe_losses.values()))}")
print(f"model forward passes per step: {calls_per_step['model']} with a frozen reference model, "
      f"{calls_per_step['precomputed']} with the precomputed table")
print(f"memory for the reference: a model copy {parameter_bytes / 1e6:.2f} MB vs a table of "
      f"{len(train_pairs)}×2 floats {table_bytes / 1e3:.1f} kB")
assert all(abs(a - b) < 1e-5 for a, b in zip(*probe_losses.values()))
assert calls_per_step == {"model": [2], "precomputed": [1]}  # the policy's pass, and the reference's or none

# %% [markdown]
# ## 7. Before training: how does the SFT model choose?
#
# Three measurements, repeated after training:
#
# - **Held-out preference accuracy**: for each held-out pair, does the model give the chosen reply a
#   higher probability than the rejected one, $\log \pi(y_w\mid x) > \log \pi(y_l\mid x)$? That is the
#   model's own preference. The held-out pairs are about people the DPO data never mentions.
# - **The style of its replies**: greedy replies to 120 "tell me about …" prompts of the training
#   pairs and to the 120 held-out prompts, sorted by `reply_style` into polite, curt, or neither (a
#   reply that uses no style phrase, or a garbled one) — and whether each reply is **clean**: made
#   only of words that exist in the world's texts (every English word, and every pair of adjacent
#   Chinese characters, occurs somewhere in the pretraining, SFT or DPO data). A reply such as
#   "Sappy to help!" or "别望对有有帮助" is not; the share of clean replies measures garbling.
# - **The SFT score**: exact-match accuracy on value-only questions chapter 5 trained (every 7th
#   one), to check that DPO does not break what SFT taught.

# %%
val_pairs = DPODataset(dataset_path("dpo", "val"), tokenizer, max_seq_len=DPOConfig().max_seq_len)
style_prompts = {
    "training prompts": [tokenizer.encode_chat_prompt(row["chosen"][:-1]) for row in train_rows[:120]],
    "held-out prompts": [tokenizer.encode_chat_prompt(row["chosen"][:-1]) for row in val_rows],
}
questions = world.questions("sft", "train")[::7]
question_prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": q.prompt}]) for q in questions]


@torch.no_grad()
def preference_accuracy(model, pairs=val_pairs):
    """Share of pairs whose chosen reply the model finds more likely than the rejected one."""
    model.eval()
    wins = 0
    for start in range(0, len(pairs), 40):
        chunk = collate_dpo([pairs[i] for i in range(start, min(start + 40, len(pairs)))])
        chosen, rejected, _ = pair_logps(model, chunk, average=False)
        wins += int((chosen > rejected).sum())
    return wins / len(pairs)


@torch.no_grad()
def greedy_replies(model, prompts, max_new_tokens):
    model.eval()
    replies = []
    for start in range(0, len(prompts), 40):
        replies += generate_batch(model, prompts[start:start + 40], max_new_tokens=max_new_tokens)
    return [tokenizer.decode(reply, skip_special_tokens=True) for reply in replies]


def word_pieces(text):
    """The English words (lower-cased) and the pairs of adjacent Chinese characters of `text`."""
    pieces = set(re.findall(r"[a-z]+", text.lower()))
    for run in re.findall(r"[\u4e00-\u9fff]+", text):
        pieces.update([run] if len(run) == 1 else (run[i:i + 2] for i in range(len(run) - 1)))
    return pieces


def strings_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from strings_in(item)


world_words = set()
for name in ("pretrain", "sft", "dpo"):
    for row in read_jsonl(dataset_path(name, "train")):
        for text in strings_in(row):
            world_words |= word_pieces(text)


def is_clean(reply):
    """Every piece of the reply occurs in the world's texts; a last word with nothing after it may have
    been cut by the token limit, so it is left out."""
    return word_pieces(re.sub(r"[A-Za-z]+$", "", reply)) <= world_words


print(f"{len(world_words)} words and character pairs in the world's texts; "
      f"clean: {is_clean('Happy to help!')}, {is_clean('Sappy to help!')}, {is_clean('希望对你有帮助')}, {is_clean('别望对有有帮助')}")
assert is_clean("Happy to help!") and not is_clean("Sappy to help!") and not is_clean("别望对有有帮助")


def style_shares(model):
    """{prompt set: {style: share of greedy replies}}, and the share of clean replies."""
    shares = {}
    for name, prompts in style_prompts.items():
        replies = greedy_replies(model, prompts, 70)
        styles = [reply_style(text) for text in replies]
        shares[name] = {style: styles.count(style) / len(styles) for style in ("polite", "curt", "neither")}
        shares[name]["clean"] = sum(map(is_clean, replies)) / len(replies)
    return shares


def sft_score(model):
    replies = greedy_replies(model, question_prompts, 12)
    return sum(is_correct(reply, q.answer) for reply, q in zip(replies, questions)) / len(questions)


def report(name, model, key):
    """Measure and print; each figure is asserted against its band (`dpo.<key>.…`)."""
    measured = {"accuracy": preference_accuracy(model), "styles": style_shares(model), "sft": sft_score(model)}
    print(f"{name}: held-out preference accuracy {measured['accuracy']:.3f}, SFT score {measured['sft']:.3f}")
    expect(f"dpo.{key}.preference_accuracy", measured["accuracy"], n=len(val_pairs))
    expect(f"dpo.{key}.sft_score", measured["sft"], n=len(questions))
    for prompt_set, shares in measured["styles"].items():
        print(f"    greedy replies to {prompt_set}: " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
        for style, share in shares.items():
            expect(f"dpo.{key}.{prompt_set.split()[0]}.{style}", share, n=len(style_prompts[prompt_set]))
    return measured


sft_model = zoo.sft()
before = report("SFT model", sft_model, "sft")
for row, reply in zip(train_rows[:3], greedy_replies(sft_model, style_prompts["training prompts"][:3], 70)):
    print(f"  {row['chosen'][0]['content']!r} → {reply!r}")

# %% [markdown]
# The SFT model has no reliable preference: SFT showed it polite and curt openings alike, so which
# reply of a held-out pair it finds more likely is close to an accident of the run — from below
# chance to about three in four across the runs of the bands file. Its greedy replies are polite,
# curt, or neither (no style phrase at all, or a garbled one: the share of clean replies says how
# often).

# %% [markdown]
# ## 8. Training
#
# `python -m minimind.train.dpo` with its defaults is exactly this cell: the SFT model as the
# starting point and the reference, β = 0.1, summed log-probs, precomputed reference log-probs,
# learning rate 10⁻⁴ for two epochs, and an SFT term of weight 1 on the chosen replies (section 10
# shows why). The engine logs the loss, reward margin, preference accuracy and the chosen/rejected
# log-probabilities every few steps.

# %%
config = DPOConfig(out_dir="", progress=False, log_interval=5)
print({k: getattr(config, k) for k in ("beta", "logps", "reference", "sft_weight", "lr", "epochs", "batch_size")})
result = run(config, model=zoo.sft(), tokenizer=tokenizer)
records = result.records
print(f"{result.steps} steps; DPO loss {records[0]['dpo_loss']:.4f} → {records[-1]['dpo_loss']:.4f}, reward margin "
      f"{records[0]['reward_margin']:.3f} → {records[-1]['reward_margin']:.3f}, training preference accuracy "
      f"{records[-1]['preference_accuracy']:.3f}")
expect("dpo.final_loss", records[-1]["dpo_loss"])

# %%
def plot_run(records, title):
    steps = [r["step"] for r in records]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.3))
    axes[0].plot(steps, [r["dpo_loss"] for r in records], label="DPO loss")
    if "sft_loss" in records[0]:
        axes[0].plot(steps, [r["sft_loss"] for r in records], label="SFT term")
    axes[0].axhline(math.log(2), color="grey", linestyle=":", label="ln 2")
    axes[0].legend()
    axes[1].plot(steps, [r["chosen_reward"] for r in records], label="chosen reward")
    axes[1].plot(steps, [r["rejected_reward"] for r in records], label="rejected reward")
    axes[1].plot(steps, [r["reward_margin"] for r in records], label="margin")
    axes[1].set_title("implicit rewards β·log(π/π_ref)")
    axes[1].legend()
    axes[2].plot(steps, [r["chosen_logps"] for r in records], label="log π(chosen)")
    axes[2].plot(steps, [r["rejected_logps"] for r in records], label="log π(rejected)")
    axes[2].set_title("sequence log-probs (training batches)")
    axes[2].legend()
    for axis in axes:
        axis.set_xlabel("optimizer step")
    figure.suptitle(title)
    plt.tight_layout()
    plt.show()


plot_run(records, "DPO + SFT term (the default)")

# %% [markdown]
# ## 9. After training: held-out pairs, generations, and the SFT score

# %%
dpo_model = result.model.eval()
after = report("after DPO", dpo_model, "dpo")
for row, reply in zip(train_rows[:3], greedy_replies(dpo_model, style_prompts["training prompts"][:3], 70)):
    print(f"  {row['chosen'][0]['content']!r} → {reply!r}")
print(f"held-out preference accuracy {before['accuracy']:.3f} → {after['accuracy']:.3f}; curt replies to training "
      f"prompts {before['styles']['training prompts']['curt']:.3f} → {after['styles']['training prompts']['curt']:.3f}"
      f", to held-out prompts {before['styles']['held-out prompts']['curt']:.3f} → "
      f"{after['styles']['held-out prompts']['curt']:.3f}; SFT score {before['sft']:.3f} → {after['sft']:.3f}")
DPO_TARGETS = {"polite": 0.8, "clean": 0.95}  # on the held-out prompts
print("the book's targets on held-out prompts: " + ", ".join(
    f"{key} ≥ {target:.0%} {'met' if after['styles']['held-out prompts'][key] >= target else 'NOT met'}"
    for key, target in DPO_TARGETS.items()) + f"; SFT score within 2 points "
    f"{'met' if after['sft'] >= before['sft'] - 0.02 else 'NOT met'}")
# held-out pairs: at least 0.9, and at least half of the way from where SFT left it to 1
assert after["accuracy"] >= 0.9 and after["accuracy"] - before["accuracy"] >= 0.5 * (1 - before["accuracy"])
for prompt_set in style_prompts:
    assert after["styles"][prompt_set]["curt"] <= min(0.05, before["styles"][prompt_set]["curt"])
    assert after["styles"][prompt_set]["polite"] >= before["styles"][prompt_set]["polite"] + 0.15
expect_outside("dpo.dpo.preference_accuracy", before["accuracy"], "the SFT model, before DPO")

# %% [markdown]
# The preference generalised: on pairs about people the DPO data never mentions, the model now
# prefers the polite reply almost always, and polite replies became much more frequent — on the
# training prompts *and* on the held-out ones, where it had no polite example to copy; curt ones
# disappeared. The facts survived: the SFT score moved by at most a point in the runs measured for
# the bands file. The book's targets (the line above) are not reached on every run: on the prompts
# about people the DPO data never mentions, some greedy replies still open with no style phrase —
# how many moves a lot from run to run — and a few are garbled.
#
# ## 10. Why the SFT term: plain DPO on a small model
#
# The DPO loss only looks at the *difference* of the two log-ratios. Nothing stops it from lowering
# both replies' probabilities, the rejected one faster — and since the two replies share most of
# their tokens (the facts), pushing the rejected one down drags the shared tokens down too. Here is
# the same run with `sft_weight=0`:

# %%
plain = run(dataclasses.replace(config, sft_weight=0.0), model=zoo.sft(), tokenizer=tokenizer)
plot_run(plain.records, "plain DPO (sft_weight=0)")
plain_model = plain.model.eval()
plain_after = report("after plain DPO", plain_model, "plain")
for row, reply in zip(train_rows[:3], greedy_replies(plain_model, style_prompts["training prompts"][:3], 70)):
    print(f"  {row['chosen'][0]['content']!r} → {reply!r}")


@torch.no_grad()
def mean_pair_logps(model, pairs=val_pairs):
    """Mean log π(chosen) and log π(rejected) over the held-out pairs."""
    model.eval()
    chosen_total, rejected_total = 0.0, 0.0
    for start in range(0, len(pairs), 40):
        chunk = collate_dpo([pairs[i] for i in range(start, min(start + 40, len(pairs)))])
        chosen, rejected, _ = pair_logps(model, chunk, average=False)
        chosen_total, rejected_total = chosen_total + float(chosen.sum()), rejected_total + float(rejected.sum())
    return chosen_total / len(pairs), rejected_total / len(pairs)


logps_by_model = {"SFT model": mean_pair_logps(sft_model), "DPO + SFT term": mean_pair_logps(dpo_model),
                  "plain DPO": mean_pair_logps(plain_model)}
for name, (chosen, rejected) in logps_by_model.items():
    print(f"{name:<15} held-out log π(chosen) {chosen:8.2f}   log π(rejected) {rejected:8.2f}")
    expect(f"dpo.logps.{name.split()[0].lower()}.chosen", chosen)
    expect(f"dpo.logps.{name.split()[0].lower()}.rejected", rejected)
assert logps_by_model["plain DPO"][0] < min(logps_by_model["DPO + SFT term"][0], logps_by_model["SFT model"][0])
assert logps_by_model["DPO + SFT term"][0] > logps_by_model["SFT model"][0] - 2, "the anchor keeps the chosen replies"
# the damage shows in the words: plain DPO garbles more of its replies to the training prompts (in every
# run measured; to the held-out prompts in most runs, not all)
assert plain_after["styles"]["training prompts"]["clean"] < after["styles"]["training prompts"]["clean"]

# %% [markdown]
# Both runs reach the same held-out preference accuracy — by the measure DPO optimises, plain DPO
# works. But it widens the gap by pushing *both* replies down, the rejected one faster: the held-out
# chosen replies lose probability too — about thirteen nats each in the measured runs, against the SFT model — and
# the tokens the two replies share are pulled both ways. With the SFT term (as in RPO
# {cite}`pang2024iterative`, and upstream's request #817) the chosen replies keep their probability
# while the rejected ones fall. What that does to the greedy replies is less regular than the
# log-probabilities: in the stored run plain DPO's replies are polite far less often; in other runs
# measured for the bands file, about as often or more. What every run shows is the damage on the
# training prompts: plain DPO's replies to them are garbled more often (the clean shares above); on the
# held-out prompts most runs show it too, one of the runs measured did not. The log-probabilities are the
# dependable signal: a policy that lowers the probability of the replies it is told to prefer has drifted, and
# on large models with diverse data plain DPO is usually stable enough, while on a small model and
# narrow data the anchor is what keeps the preferred replies likely.
#
# ## 11. What β does
#
# In the derivation β is the strength of the KL penalty: the reward is $\beta \log(\pi/\pi_\text{ref})$,
# so a small β needs a *large* change of log-probability to produce a given margin. In a real run two
# things change that picture. Adam divides every gradient by a running estimate of its size, so
# the overall factor β in $\nabla\mathcal{L}_\text{DPO}$ is largely normalised away; what is left of β
# in plain DPO is how quickly $\sigma(\hat r_l - \hat r_w)$ saturates and shifts the weight between
# pairs. And with the SFT term, the gradient is $\beta\cdot(\text{DPO part}) + \text{SFT part}$: β becomes
# the exchange rate between the preference and the anchor. We train one epoch with three values of
# β and measure the held-out preference accuracy, the SFT score, and how far the policy moved: the
# mean change of $\log \pi$ per token on the held-out *rejected* replies, relative to the SFT model.

# %%
@torch.no_grad()
def drift_per_token(model, reference_model, pairs=val_pairs):
    """Mean over held-out rejected replies of (log π − log π_ref) per token: how far the policy moved."""
    model.eval()
    total = 0.0
    for start in range(0, len(pairs), 40):
        chunk = collate_dpo([pairs[i] for i in range(start, min(start + 40, len(pairs)))])
        _, policy_rejected, _ = pair_logps(model, chunk, average=True)
        _, reference_rejected, _ = pair_logps(reference_model, chunk, average=True)
        total += float((policy_rejected - reference_rejected).sum())
    return total / len(pairs)


betas = (0.02, 0.1, 0.5)
sweep = {}
for beta in betas:
    sweep_result = run(dataclasses.replace(config, beta=beta, epochs=1), model=zoo.sft(), tokenizer=tokenizer)
    model = sweep_result.model.eval()
    sweep[beta] = {"accuracy": preference_accuracy(model), "drift": drift_per_token(model, sft_model),
                   "sft": sft_score(model), "margin": sweep_result.records[-1]["reward_margin"]}
    print(f"β={beta:<5}: held-out accuracy {sweep[beta]['accuracy']:.3f}, rejected replies moved "
          f"{sweep[beta]['drift']:+.3f} nats/token, SFT score {sweep[beta]['sft']:.3f}, "
          f"training margin {sweep[beta]['margin']:.3f}")
    expect(f"dpo.beta_{beta}.preference_accuracy", sweep[beta]["accuracy"], n=len(val_pairs))
    expect(f"dpo.beta_{beta}.drift", sweep[beta]["drift"])

# %%
figure, axes = plt.subplots(1, 3, figsize=(12, 3.3))
axes[0].plot(betas, [sweep[b]["accuracy"] for b in betas], marker="o")
axes[0].set_title("held-out preference accuracy")
axes[1].plot(betas, [-sweep[b]["drift"] for b in betas], marker="o", color="tab:red")
axes[1].set_title("−Δ log π per token, held-out rejected")
axes[2].plot(betas, [sweep[b]["sft"] for b in betas], marker="o", color="tab:green")
axes[2].set_title("SFT score")
for axis in axes:
    axis.set_xscale("log")
    axis.set_xlabel("β")
plt.tight_layout()
plt.show()
assert all(sweep[b]["accuracy"] >= 0.75 for b in betas), "one epoch of DPO learns the preference at every β"
assert sweep[betas[0]]["drift"] < sweep[betas[1]]["drift"] < sweep[betas[2]]["drift"], "a larger β moves the policy less"

# %% [markdown]
# One epoch learns the preference at every β, to about the same held-out accuracy. What β changes
# is how far the policy goes to get there: the larger β, the less the rejected replies' probability
# falls (asserted: in every run measured the drift shrinks as β grows), while the training margin —
# measured in reward units, β times the log-ratio — grows. That is the derivation's reading: β is the
# strength of the pull towards the reference, and a small β buys the same preference with a larger
# move. The exercise "β without the SFT term" below repeats the sweep with plain DPO, where Adam's
# normalisation of the gradient can be put to the test.

# %% [markdown]
# ## Exercises
#
# ```{exercise} Why ln 2, and why Z cancels
# :label: ex-05-ln2
# (a) Show that the DPO loss equals $\ln 2$ for every pair when $\pi_\theta = \pi_\text{ref}$, whatever
# β. (b) The implicit reward $\beta \log \frac{\pi}{\pi_\text{ref}} + \beta \log Z(x)$ contains an
# intractable $Z(x)$. Why can DPO ignore it, and what would go wrong if the two replies of a pair
# had *different* prompts?
# ```
#
# ```{solution} ex-05-ln2
# :class: dropdown
# (a) Both log-ratios are $\log 1 = 0$, so the margin is 0 and the loss is $-\log\sigma(0) = -\log\tfrac12 = \ln 2$.
# (b) Bradley–Terry depends only on $r(x, y_w) - r(x, y_l)$, and $\beta \log Z(x)$ is the same for
# both replies because it depends on the prompt alone — it cancels. With different prompts
# $x_w \ne x_l$ the difference would contain $\beta(\log Z(x_w) - \log Z(x_l))$, which DPO cannot
# compute: the loss would optimise the wrong quantity. That is why `DPODataset` refuses pairs
# whose prompts differ.
# ```
#
# ```{exercise} Write the pieces yourself
# :label: ex-05-code
# Write three functions and pass them to the self-checks:
# `bradley_terry(r_a, r_b)` → $P(a \succ b)$; `my_sequence_logps(logits, ids, mask)` → the summed
# log-probability of the masked tokens (mind the shift); `my_dpo_loss(pc, pr, rc, rr, beta)` → the
# mean DPO loss.
# ```
#
# ```{solution} ex-05-code
# :class: dropdown
# The functions of sections 2 and 4 (`bradley_terry`, `sequence_logps_scratch`,
# `dpo_loss_scratch`) are solutions; the cell below passes them to the checks.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.dpo import check_bradley_terry, check_dpo_loss, check_sequence_logps

check_bradley_terry(bradley_terry)
check_sequence_logps(sequence_logps_scratch)
check_dpo_loss(dpo_loss_scratch)

# %% [markdown]
# ```{exercise} Mean log-probs, label smoothing, the weight of the SFT term
# :label: ex-05-variants
# Train three variants for one epoch and compare held-out preference accuracy, reply styles and the
# SFT score with the default run: (a) `logps="mean"` with the same β = 0.1, then with β = 4;
# (b) `label_smoothing=0.2`; (c) `sft_weight=0.3` and `sft_weight=3.0`. Which variant trains
# slowest, and why? What does the SFT weight do to `chosen_logps` and to the reward margin?
# ```
#
# ```{solution} ex-05-variants
# :class: dropdown
# Use `run(dataclasses.replace(config, epochs=1, logps="mean"), model=zoo.sft(), tokenizer=tokenizer)`
# and `report(...)` of section 7. (a) With the mean and β = 0.1 the margins grow far more slowly:
# each reply's log-ratio is divided by its ~40 tokens, so the effective β is ~40 times smaller and
# the implicit rewards barely separate in one epoch; β ≈ 4 restores the pace (Adam's normalisation
# hides part of the difference early on, since it rescales the gradient). (b) Conservative DPO keeps
# the loss from driving margins to infinity — its minimum sits at a finite margin — so the margin
# plateaus lower, with the same accuracy here because the labels are clean. (c) A small weight lets
# `chosen_logps` fall, as in plain DPO, and the replies start to degrade; a large one keeps them
# high but slows the growth of the margin: the two terms pull the shared tokens in different
# directions and the SFT term wins.
# ```
#
# ```{exercise} β without the SFT term
# :label: ex-05-beta
# Repeat the sweep of section 11 with `sft_weight=0.0`. How much do held-out accuracy and drift
# change between β = 0.02 and β = 0.5 now? Explain the result with Adam's update rule, then rerun
# the two ends with plain SGD (write a 10-line loop with `torch.optim.SGD`, `pair_logps` and
# `dpo_loss`) and compare.
# ```
#
# ```{solution} ex-05-beta
# :class: dropdown
# With plain DPO and Adam the two ends come out close: the gradient is β·σ(·)·(∇log π_w − ∇log π_l),
# and Adam divides each coordinate by the root of a running mean of its squared gradient, so a
# constant factor β cancels; β then only acts through σ(−margin), which saturates sooner for a large
# β and shifts the weight towards the pairs with the smallest margins. With SGD the update is
# proportional to β: at the same learning rate β = 0.02 barely moves the model, and β = 0.5 moves it
# 25 times as fast at first — the textbook picture, in which β trades reward against closeness to the
# reference. (This is one reason why reported "best β" values do not transfer between setups.)
# ```
#
# ## Summary
#
# - Bradley–Terry turns pairwise preferences into a likelihood: $P(y_w \succ y_l) = \sigma(r_w - r_l)$.
# - The KL-regularised reward objective has a closed-form optimum, which expresses a reward through
#   a policy; the intractable normaliser cancels in a pairwise comparison. That yields the DPO loss:
#   a logistic loss on the difference of two log-ratios against a frozen reference.
# - Sequence log-probabilities need the one-token shift and the reply-only mask; `minimind` sums them
#   by default and computes the reference's once, before training.
# - On the synthetic pairs the held-out preference accuracy went to nearly 1 and the model stopped
#   replying curtly, also to prompts about people absent from the DPO data; the SFT score held.
# - Plain DPO lowers the chosen replies too and damages a small model; an SFT term on the chosen
#   replies prevents it, and plain DPO's replies are garbled more often. With that term, β sets how
#   far the policy moves for the same held-out accuracy: the larger β, the smaller the move.
#
# ## Further reading
#
# - Rafailov et al., *Direct Preference Optimization* {cite}`rafailov2023dpo` — the derivation of
#   section 3, and experiments at scale.
# - Pang et al., *Iterative Reasoning Preference Optimization* {cite}`pang2024iterative` — DPO with an
#   added negative log-likelihood term on the chosen replies, as used here.
# - Ouyang et al., *InstructGPT* {cite}`ouyang2022instructgpt` — the RLHF pipeline DPO replaces.
# - Bradley and Terry {cite}`bradley1952rank` — the original paired-comparison model.
