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
# # Chapter 7 — LoRA: fine-tuning through a low-rank door
#
# Full fine-tuning updates every weight of the model and keeps, for each one, a gradient and two
# AdamW moments: four copies of the model in memory, and a full copy on disk for every variant you
# train. Low-Rank Adaptation (LoRA) freezes the model and learns, beside each chosen weight matrix
# $W$, a small update $\Delta W = BA$ of low rank. This chapter builds LoRA from the idea up, checks
# the notebook's version against `minimind.lora` (and the tests check `minimind.lora` against
# PEFT), and uses it to give the book's chat model a new identity — "I am MiniMind" — without
# disturbing what it knew.
#
# **Learning objectives**
#
# - Count what LoRA trains for a given rank and set of target matrices, for the 26M MiniMind2-Small.
# - See in the weights that a fine-tuning update is concentrated in a few directions.
# - Implement a LoRA linear layer (rank, alpha scaling, dropout, B = 0 at the start) and merge it.
# - Train an identity adapter, measure its effect on held-out phrasings and its side effects.
# - Measure the trainable fraction and the memory LoRA saves; read a rank sweep.
# - Save, load, switch and merge adapters.
# - Teach a domain whose words the model has never read, and compare LoRA, LoRA with those words'
#   embedding rows, and full fine-tuning on held-out questions, base ability and memory.
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
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

import minimind
from minimind import zoo
from minimind.runtime import cpu_threads
from minimind.checks.bands import expect, expect_outside
from minimind.config import get_config
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import is_correct, is_minimind_identity, wilson_interval
from minimind.generate import generate_batch
from minimind.lora import (LoRALinear, apply_lora, load_lora, lora_layers, merge_lora, save_lora,
                           set_active_adapter, unmerge_lora)
from minimind.model import MiniMind
from minimind.train.lora import LoRAConfig, run

random.seed(0)
torch.manual_seed(0)
# Every core (MINIMIND_THREADS overrides it; `make test` runs one chapter per core on one thread each).
# Figures that float rounding moves differ a little on another CPU or thread count, so the chapter
# asserts them against bands measured across seeds and kernel paths (minimind.checks.bands).
torch.set_num_threads(cpu_threads())
print(f"torch {torch.__version__} · minimind {minimind.__version__}")

# %% [markdown]
# ## 1. The idea, with the numbers of the 26M model
#
# Fine-tuning changes a weight matrix $W_0 \in \mathbb{R}^{d_\text{out} \times d_\text{in}}$ into
# $W_0 + \Delta W$. LoRA {cite}`hu2022lora` restricts the change to rank $r$:
#
# $$h = W_0 x + \frac{\alpha}{r}\, B A x, \qquad A \in \mathbb{R}^{r \times d_\text{in}},\; B \in \mathbb{R}^{d_\text{out} \times r},\; r \ll \min(d_\text{in}, d_\text{out}).$$
#
# $W_0$ stays frozen; only $A$ and $B$ train — $r(d_\text{in} + d_\text{out})$ numbers instead of
# $d_\text{in} d_\text{out}$. $A$ starts random and $B$ at zero, so $BA = 0$ and training starts
# *exactly* at the base model. The factor $\alpha/r$ keeps the size of the update roughly independent
# of the rank, so a learning rate tuned at one rank carries over to another.
#
# MiniMind2-Small (hidden 512, 8 layers, 2 KV heads, SwiGLU 1408) has seven projections per layer.
# Upstream's LoRA only adapts the *square* ones — which, with grouped-query attention, means only
# `q_proj` and `o_proj`; `minimind` adapts all seven by default. Counting on the `meta` device
# (shapes without memory):

# %% tags=["nbval-check-output"]
def lora_parameter_count(in_features: int, out_features: int, rank: int) -> int:
    return rank * (in_features + out_features)


with torch.device("meta"):
    big = MiniMind(get_config("minimind2-small"))
total = sum(p.numel() for p in big.parameters())
layer = big.model.layers[0]
shapes = {name: module.weight.shape for name, module in layer.named_modules() if isinstance(module, nn.Linear)}
print(f"MiniMind2-Small: {total / 1e6:.2f}M parameters; per layer (rank 8):")
for name, (out_features, in_features) in shapes.items():
    print(f"  {name:<16} {in_features:>5} → {out_features:<5} full {in_features * out_features:>8,}   "
          f"LoRA {lora_parameter_count(in_features, out_features, 8):>6,}")
big_trainable = {}
for rank in (8, 16):
    for targets in (("q_proj", "o_proj"), ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")):
        with torch.device("meta"):
            adapted = apply_lora(MiniMind(get_config("minimind2-small")), rank=rank, alpha=2 * rank, targets=targets)
        big_trainable[rank, len(targets)] = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
        print(f"rank {rank:>2} on {len(targets)} projection(s): {big_trainable[rank, len(targets)]:>7,} trainable = "
              f"{100 * big_trainable[rank, len(targets)] / total:.2f}% of the model")
assert big_trainable[8, 7] == 8 * 8 * sum(i + o for o, i in shapes.values())

# %% [markdown]
# ## 2. Is a fine-tuning update really low-rank?
#
# The LoRA paper's bet is that the update a task needs has a low "intrinsic rank". We can look: the
# book's SFT model is the pretrained model plus a *full-rank* fine-tuning update. Take
# $\Delta W = W_\text{sft} - W_\text{pretrained}$ for each projection, and ask what share of its
# energy (the squared Frobenius norm, $\sum_i \sigma_i^2$) its top-$k$ singular directions hold,
# compared with a random matrix of the same shape and norm.

# %%
pretrained, sft_model = zoo.pretrained(), zoo.sft()
energy = {}
for name in ("q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"):
    path = f"model.layers.1.{'self_attn' if name.endswith(('q_proj', 'v_proj', 'o_proj')) else 'mlp'}.{name}.weight"
    delta = sft_model.state_dict()[path] - pretrained.state_dict()[path]
    singular = torch.linalg.svdvals(delta)
    energy[name] = (singular**2).cumsum(0) / (singular**2).sum()
generator = torch.Generator().manual_seed(0)
random_singular = torch.linalg.svdvals(torch.randn(delta.shape, generator=generator))
random_energy = (random_singular**2).cumsum(0) / (random_singular**2).sum()
for name, curve in energy.items():
    print(f"layer 1 {name:<9}: top-8 directions hold {curve[7]:.3f} of ΔW's energy (random matrix: {random_energy[7]:.3f})")
assert all(curve[7] > 2 * random_energy[7] for curve in energy.values())
for name, curve in energy.items():
    expect(f"lora.sft_update_energy_top8.{name}", curve[7])

plt.figure(figsize=(6, 3.4))
for name, curve in energy.items():
    plt.plot(range(1, len(curve) + 1), curve, label=f"ΔW {name}")
plt.plot(range(1, len(random_energy) + 1), random_energy, "k:", label="random (down_proj shape)")
plt.xscale("log")
plt.xlabel("number of singular directions k")
plt.ylabel("share of ‖ΔW‖²")
plt.title("SFT update of layer 1: energy in the top-k directions")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 3. A LoRA layer, built here and checked against `minimind`
#
# The layer wraps a frozen linear layer. Dropout, when used, acts on the adapter's *input* only, so
# the base path is never disturbed. Two thin matrix products ($x A^\top$, then $\cdot B^\top$) are
# cheaper than forming the full $d_\text{out} \times d_\text{in}$ update.

# %% tags=["nbval-check-output"]
class LoRALinearScratch(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # random, like any linear layer
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # zero: starts as the base model
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling


torch.manual_seed(0)
base_linear = nn.Linear(128, 352, bias=False)
ours = LoRALinearScratch(copy.deepcopy(base_linear), rank=4, alpha=8)
theirs = LoRALinear.from_linear(copy.deepcopy(base_linear))
theirs.add_adapter("default", rank=4, alpha=8)
theirs.set_active("default")
x = torch.randn(3, 5, 128)
assert torch.equal(ours(x), base_linear(x)) and torch.equal(theirs(x), base_linear(x)), "B = 0: exactly the base"
with torch.no_grad():
    ours.lora_B.normal_()
    theirs.lora_A["default"].copy_(ours.lora_A)
    theirs.lora_B["default"].copy_(ours.lora_B)
ours(x).square().sum().backward()
theirs(x).square().sum().backward()
torch.testing.assert_close(ours(x), theirs(x))
torch.testing.assert_close(ours.lora_A.grad, theirs.lora_A["default"].grad)
torch.testing.assert_close(ours.lora_B.grad, theirs.lora_B["default"].grad)
print("notebook LoRA layer = minimind.lora.LoRALinear: outputs and gradients agree; B = 0 gives the base layer exactly")

# %% [markdown]
# `minimind.lora.LoRALinear` *is* an `nn.Linear` (same `weight`, same state-dict key) that can hold
# several named adapters. `apply_lora(model, rank, alpha, dropout, targets, name)` swaps the target
# projections for it and freezes everything except the new adapter. `tests/test_lora.py` checks it
# against PEFT's LoRA on the same weights: same outputs, same gradients.

# %% [markdown]
# ## 4. An identity adapter
#
# The SFT data taught the model a generic answer to "who are you?" ("I am an AI assistant…"). The
# `lora_identity` set teaches a new one — "I am MiniMind, a tiny language model trained from scratch
# in the MiniMind Book." — in English and Chinese, mixed with a third as many ordinary questions
# replayed from SFT, so that the adapter learns *when* to say it. The held-out set asks with
# phrasings that never occur in training ("Who exactly are you?", "你叫啥？"). Two measurements,
# before and after: the **identity score** (share of held-out replies that claim the MiniMind
# identity) and the **fact score** (exact match on 200 value-only questions of chapter 5), the
# ability the adapter must not damage.

# %%
tokenizer = zoo.tokenizer()
world = build_world(0)
identity_val = list(read_jsonl(dataset_path("lora_identity", "val"), "sft"))
identity_prompts = [tokenizer.encode_chat_prompt(row["conversations"][:-1]) for row in identity_val]
questions = world.questions("sft", "train")[::7][:200]
question_prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": q.prompt}]) for q in questions]
print(f"{len(identity_val)} held-out phrasings, e.g. {identity_val[0]['conversations'][0]['content']!r}")


@torch.no_grad()
def greedy_replies(model, prompts, max_new_tokens):
    model.eval()
    replies = []
    for start in range(0, len(prompts), 50):
        replies += generate_batch(model, prompts[start:start + 50], max_new_tokens=max_new_tokens)
    return [tokenizer.decode(reply, skip_special_tokens=True) for reply in replies]


def identity_score(model):
    return sum(map(is_minimind_identity, greedy_replies(model, identity_prompts, 40))) / len(identity_prompts)


def fact_score(model):
    replies = greedy_replies(model, question_prompts, 12)
    return sum(is_correct(reply, q.answer) for reply, q in zip(replies, questions)) / len(questions)


before = {"identity": identity_score(sft_model), "facts": fact_score(sft_model)}
print(f"base model: identity score {before['identity']:.3f}, fact score {before['facts']:.3f}")
expect("lora.base.identity", before["identity"], n=len(identity_prompts))
expect("lora.base.facts", before["facts"], n=len(questions))
for prompt, reply in zip(identity_val[:2], greedy_replies(sft_model, identity_prompts[:2], 40)):
    print(f"  {prompt['conversations'][0]['content']!r} → {reply!r}")

# %% [markdown]
# `python -m minimind.train.lora` with its defaults is this cell: rank 16, α = 32, dropout 0.1 on
# the adapter's input, all seven projections, four epochs at learning rate 2·10⁻³ — about three
# times the rate of chapter 5's full fine-tuning (7·10⁻⁴), since the adapter starts at zero and has
# few parameters to move. The rank comes from measurements on this model: section 6's sweep
# shows how much lower ranks learn in the same steps; and dropout on the adapter's input is the usual
# guard against an adapter that memorises its few hundred examples.

# %%
config = LoRAConfig(out_dir="", progress=False, log_interval=5)
print({k: getattr(config, k) for k in ("rank", "alpha", "lora_dropout", "targets", "lr", "epochs", "batch_size")})
result = run(config, model=zoo.sft(), tokenizer=tokenizer)
lora_model = result.model.eval()
trainable = sum(p.numel() for p in lora_model.parameters() if p.requires_grad)
print(f"{result.steps} steps, loss {result.records[0]['loss']:.4f} → {result.records[-1]['loss']:.4f}; "
      f"{trainable:,} trainable parameters")
expect("lora.final_loss", result.records[-1]["loss"])

plt.figure(figsize=(5, 3))
plt.plot([r["step"] for r in result.records], [r["loss"] for r in result.records])
plt.xlabel("optimizer step")
plt.ylabel("loss (assistant tokens)")
plt.title("identity LoRA")
plt.show()

# %%
after = {"identity": identity_score(lora_model), "facts": fact_score(lora_model)}
print(f"identity score on held-out phrasings: {before['identity']:.3f} → {after['identity']:.3f}")
print(f"fact score (other ability):           {before['facts']:.3f} → {after['facts']:.3f}")
for prompt, reply in zip(identity_val[:4], greedy_replies(lora_model, identity_prompts[:4], 40)):
    print(f"  {prompt['conversations'][0]['content']!r} → {reply!r}")
print(f"the book's target, base ability within 5 points: {'met' if after['facts'] >= before['facts'] - 0.05 else 'NOT met'}"
      f" ({100 * (after['facts'] - before['facts']):+.1f} points)")
assert before["identity"] <= 0.1 and after["identity"] >= 0.8
assert after["facts"] > 0.7 * before["facts"], "the adapter keeps most of the base model's knowledge"
expect("lora.identity", after["identity"], n=len(identity_prompts))
expect("lora.facts", after["facts"], n=len(questions))
expect_outside("lora.identity", before["identity"], "the base model, without the adapter")


def word_for_word(model):
    """Per language: share of held-out replies that are the taught answer itself (a prefix of it where the
    40-token budget cuts the reply; a character cut in half at the end does not count against it)."""
    replies = greedy_replies(model, identity_prompts, 40)
    shares = {}
    for language, is_chinese in (("en", False), ("zh", True)):
        pairs = [(reply.rstrip("\ufffd"), row["conversations"][-1]["content"])
                 for reply, row in zip(replies, identity_val)
                 if any("\u4e00" <= ch <= "\u9fff" for ch in row["conversations"][0]["content"]) == is_chinese]
        shares[language] = sum(len(reply) >= 10 and answer.startswith(reply) for reply, answer in pairs) / len(pairs)
    return shares


strict = word_for_word(lora_model)
print(f"word for word the taught answer: English {strict['en']:.3f}, Chinese {strict['zh']:.3f}")
for row in identity_val[:2]:  # the first held-out row asks in English, the second in Chinese
    answer = row["conversations"][-1]["content"]
    print(f"  taught answer {answer[:12]!r}…: {len(answer)} characters, "
          f"{len(tokenizer.encode(answer))} tokens ({len(answer) / len(tokenizer.encode(answer)):.2f} characters/token)")
print("the book's target, word for word ≥ 80% in both languages: "
      + ("met" if min(strict.values()) >= 0.8 else "NOT met"))
for lang in ("en", "zh"):
    expect(f"lora.word_for_word.{lang}", strict[lang], n=len(identity_prompts) // 2)

set_active_adapter(lora_model, None)  # the base model, bit for bit, with the adapter switched off
probe_ids = torch.tensor([identity_prompts[0]])
assert torch.equal(lora_model(probe_ids).logits, sft_model(probe_ids).logits)
set_active_adapter(lora_model, "identity")
print("adapter switched off → outputs identical to the SFT model")

# %% [markdown]
# The identity score is lenient on purpose: it asks whether the reply *claims* the MiniMind identity,
# and nearly every held-out reply does. The strict measure — the taught sentence word for word — is
# printed for each language. The last printed lines show what makes the Chinese answer learnable:
# the book's tokenizer was trained on the whole book corpus, the identity answers included
# (chapter 1), and gives every Chinese character a token of its own, so the Chinese sentence is one
# token per character and none of them is a byte-level fragment. Where word for word falls short —
# in one run of the bands file an English reply reads "a tiny language model Fine from scratch" —
# the reply starts right and a word goes astray in the middle; the exercise "How long to train?"
# measures what the number of epochs does. What the adapter costs is printed beside the target: the
# fact score falls by a point or two — the third of ordinary questions replayed in the identity set
# protects most of what the base model answered, not all of it.

# %% [markdown]
# ## 5. What LoRA saves
#
# Training memory is the weights plus, for every *trainable* parameter, a gradient and AdamW's two
# moments. We measure the optimizer state and gradients after one step of each kind of training on
# the book's model, then apply the same arithmetic to the 26M model.

# %% tags=["nbval-check-output"]
def training_state_bytes(model):
    """Bytes of gradients + AdamW state after one optimizer step on a small batch."""
    trainable_parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable_parameters, lr=1e-4)
    ids = torch.tensor([question_prompts[0]])
    model.train()
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    gradient_bytes = sum(p.grad.numel() * p.grad.element_size() for p in trainable_parameters)
    state_bytes = sum(t.numel() * t.element_size() for state in optimizer.state.values()
                      for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    return gradient_bytes + state_bytes


full = zoo.sft()
adapted = apply_lora(zoo.sft(), rank=config.rank, alpha=config.alpha)
weights_bytes = sum(p.numel() * p.element_size() for p in full.parameters())
full_bytes, lora_bytes = training_state_bytes(full), training_state_bytes(adapted)
n_total = sum(p.numel() for p in full.parameters())
n_lora = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
print(f"book model: {n_lora:,} of {n_total:,} parameters trainable ({100 * n_lora / n_total:.2f}%)")
print(f"  gradients + AdamW state: full fine-tuning {full_bytes / 1e6:.2f} MB, LoRA {lora_bytes / 1e6:.3f} MB "
      f"(weights themselves {weights_bytes / 1e6:.2f} MB)")
assert full_bytes == 3 * 4 * n_total and lora_bytes == 3 * 4 * n_lora  # grad + 2 moments, fp32

big_lora = big_trainable[16, 7]  # the default: rank 16 on all seven projections, counted in section 1
print(f"MiniMind2-Small, fp32: full fine-tuning needs {16 * total / 1e9:.2f} GB (weights + grads + 2 moments), "
      f"LoRA {(4 * total + 16 * big_lora) / 1e9:.3f} GB; the saved adapter is {4 * big_lora / 1e6:.2f} MB "
      f"instead of a {4 * total / 1e6:.0f} MB model")

# %% [markdown]
# ## 6. How much rank does an identity need?
#
# We retrain the identity adapter at rank 4 and rank 64 with the default budget and α = 2r (the same
# α/r as the default), and set them beside the rank-16 run of section 4: parameters, final training
# loss, held-out identity score, and the fact score it costs.

# %%
sweep = {config.rank: {"loss": result.records[-1]["loss"], "identity": after["identity"], "facts": after["facts"],
                       "params": trainable}}
for rank in (4, 64):
    sweep_result = run(dataclasses.replace(config, rank=rank, alpha=2.0 * rank), model=zoo.sft(), tokenizer=tokenizer)
    sweep[rank] = {"loss": sweep_result.records[-1]["loss"], "identity": identity_score(sweep_result.model),
                   "facts": fact_score(sweep_result.model),
                   "params": sum(p.numel() for p in sweep_result.model.parameters() if p.requires_grad)}
ranks = sorted(sweep)
for rank in ranks:
    print(f"rank {rank:>2}: {sweep[rank]['params']:>7,} parameters, final loss {sweep[rank]['loss']:.4f}, "
          f"identity score {sweep[rank]['identity']:.3f}, fact score {sweep[rank]['facts']:.3f}")
    expect(f"lora.rank_{rank}.identity", sweep[rank]["identity"], n=len(identity_prompts))
    expect(f"lora.rank_{rank}.final_loss", sweep[rank]["loss"])

figure, axes = plt.subplots(1, 3, figsize=(12, 3.3))
axes[0].plot(ranks, [sweep[r]["identity"] for r in ranks], marker="o")
axes[0].set_title("held-out identity score")
axes[1].plot(ranks, [sweep[r]["loss"] for r in ranks], marker="o", color="tab:red")
axes[1].set_title("final training loss")
axes[2].plot(ranks, [sweep[r]["facts"] for r in ranks], marker="o", color="tab:green")
axes[2].axhline(before["facts"], color="grey", linestyle=":", label="base model")
axes[2].set_title("fact score")
axes[2].legend()
for axis in axes:
    axis.set_xscale("log", base=2)
    axis.set_xlabel("rank r")
plt.tight_layout()
plt.show()
assert sweep[64]["loss"] < sweep[16]["loss"] < sweep[4]["loss"] and sweep[16]["identity"] >= 0.8

# %% [markdown]
# More rank lowers the final training loss (asserted); the lenient identity score does
# not need it — the book's tokenizer was trained on the whole book corpus, the identity answers
# included (chapter 1), so the new answer is made of tokens the model has embeddings for, and a
# small adapter can point the replies at it. What more rank buys is a closer fit of the exact
# wording, and what it may cost is the fact score: a larger update can move more of what the base
# model did (read the third panel; the bands file records how much this moves between runs).

# %% [markdown]
# ## 7. Merging, saving, switching
#
# At inference the adapter's two extra matrix products can be folded away:
# $W = W_0 + \frac{\alpha}{r} BA$ is an ordinary matrix, and the merged model runs at exactly the base
# model's speed. `merge_lora` does this in place, `unmerge_lora` restores the weight saved at merge time
# (subtracting $\Delta W$ again would not give $W_0$ back bit for bit in floating point);
# `save_lora` writes the adapter alone (a few hundred kB) with a fingerprint of the base model, so
# loading it onto a different base fails with a clear error.

# %%
ids = torch.tensor([identity_prompts[1]])
with torch.no_grad():
    unmerged_logits = lora_model(ids).logits
    merge_lora(lora_model)
    merged_logits = lora_model(ids).logits
print(f"max |merged − unmerged| = {(merged_logits - unmerged_logits).abs().max().item():.1e}")
torch.testing.assert_close(merged_logits, unmerged_logits, rtol=1e-4, atol=1e-4)
print("merged reply:", greedy_replies(lora_model, identity_prompts[1:2], 40)[0])
unmerge_lora(lora_model)

folder = Path(tempfile.mkdtemp()) / "identity"
save_lora(lora_model, folder, name="identity")
print("adapter files:", {p.name: f"{p.stat().st_size / 1e3:.1f} kB" for p in sorted(folder.iterdir())})
fresh = zoo.sft()
load_lora(fresh, folder)
torch.testing.assert_close(fresh(ids).logits, unmerged_logits)
try:
    load_lora(zoo.pretrained(), folder)
except ValueError as error:
    print("onto the pretrained model instead:", str(error).split(";")[0].split(": ", 1)[1])

# %% [markdown]
# ## 8. A new domain: the tea house
#
# The identity adapter taught one sentence made of words the model already knew. A domain is
# harder: the zoo's tea house has thirty invented teas, each with a price, a city of origin, a
# flavour and a steeping time — 240 facts in two languages that nothing before it mentions. The
# adapter's data asks each question nine ways per attribute and language (`lora_domain` has two,
# `lora_domain_phrasings` seven more), with a third as many ordinary SFT questions replayed. It is
# scored on **three other phrasings per attribute** that it never trains on (`lora_domain`'s
# validation split: 720 questions), such as "What would a cup of Moonleaf tea cost?" or
# "泡Moonleaf茶要几分钟？".
#
# First, what the frozen model can read. The cell lists the tokens the tea data is written with
# that occur nowhere in the text the SFT model learnt from (its pretraining and SFT data).

# %%
from minimind.data.synthetic import TEA_WORDS
from minimind.train.lora import corpus_token_ids

read = set().union(*(corpus_token_ids(tokenizer, dataset_path(name)) for name in ("pretrain", "sft")))
tea_tokens = set().union(*(corpus_token_ids(tokenizer, dataset_path(name))
                           for name in ("lora_domain", "lora_domain_phrasings")))
never_read = sorted(tea_tokens - read)
words = [tokenizer.decode([i]) for i in never_read]
print(f"the tea data uses {len(tea_tokens)} distinct tokens; {len(never_read)} of them occur in no pretraining "
      f"or SFT text, among them {[w for w in words if len(w.strip()) > 3][:14]}")
assert not [word for word in TEA_WORDS if set(tokenizer.encode(" " + word)) <= read]  # no tea name or flavour was read


def mean_cosine(ids):
    """Mean cosine similarity between the SFT model's embedding rows of `ids`, over distinct pairs."""
    rows = F.normalize(sft_model.model.embed_tokens.weight[ids].detach(), dim=-1)
    return ((rows @ rows.T).sum().item() - len(ids)) / (len(ids) * (len(ids) - 1))


known = sorted(tea_tokens & read)
print(f"mean cosine between embedding rows: the {len(never_read)} never read {mean_cosine(never_read):.3f}, "
      f"the {len(known)} read ones {mean_cosine(known):.3f}")
assert mean_cosine(never_read) > 0.9 > mean_cosine(known) + 0.5
tea_held_out = {lang: world.tea_questions("reworded", lang) for lang in ("en", "zh")}
unknown = {tokenizer.decode([i]) for items in tea_held_out.values() for item in items
           for i in tokenizer.encode(item.prompt) if i not in read | tea_tokens}
print(f"tokens of the {sum(map(len, tea_held_out.values()))} held-out questions that neither the base corpora "
      f"nor the tea data hold: {sorted(unknown) or 'none'}")
assert not unknown

# %% [markdown]
# Thirty tea names, the flavour words, and the words for asking about them — "price", "flavour",
# "steep", "minutes", "茶", "泡" and the pieces of many more — are tokens the model has never read.
# Pretraining never asked the model to read them, and through the output layer that shares the
# embedding matrix (tied weights) it asked, at every position, that they *not* be written next:
# every such row got the same push away from every context, so they all point one way (mean
# cosine near 1, where rows of words the model read are nearly unrelated). The frozen model reads
# "price" and "flavour" alike and every tea as the same word, and an adapter on the projections
# has little to tell them apart with. So the zoo's adapter also trains those rows —
# `apply_lora(..., trainable_tokens=ids)`; on the command line
# `--base_corpora pretrain.jsonl,sft.jsonl` finds them as this cell did — and through the tied
# output layer the same rows let it *write* the new words too. The last check is fairness: no
# held-out question uses a word neither the model nor the adapter has seen, since no fine-tune
# could understand a word it has never met.
#
# Three ways to teach the domain, on the same data, 1,280 steps of 16 conversations each: LoRA
# alone (rank 16, all seven projections); LoRA with the never-read rows; and full fine-tuning of
# every weight with chapter 5's SFT stage (learning rate 7·10⁻⁴). Each is a zoo artefact
# (`lora_domain_plain`, `lora_domain`, `domain_full`); the cell scores them with greedy decoding
# against the SFT model, and measures what each trains and holds in memory.

# %%
tea_trained = world.tea_questions("train")  # lora_domain's two phrasings per attribute: 480 questions


def tea_score(model, items):
    prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": item.prompt}]) for item in items]
    replies = greedy_replies(model, prompts, 10)
    return sum(is_correct(reply, item.answer) for reply, item in zip(replies, items)) / len(items)


with_rows = apply_lora(zoo.sft(), rank=config.rank, alpha=config.alpha, name="domain", trainable_tokens=never_read)
costs = {"SFT model": (0, 0), "LoRA": (n_lora, lora_bytes),
         "LoRA + rows": (sum(p.numel() for p in with_rows.parameters() if p.requires_grad), training_state_bytes(with_rows)),
         "full fine-tuning": (n_total, full_bytes)}
models = {"SFT model": sft_model, "LoRA": zoo.load("lora_domain_plain"), "LoRA + rows": zoo.load("lora_domain"),
          "full fine-tuning": zoo.load("domain_full")}
assert models["LoRA + rows"].model.embed_tokens.lora_token_ids["domain"].tolist() == never_read  # the rows found above
groups = {"trained": (tea_trained, "trained"), "held-out en": (tea_held_out["en"], "held_out.en"),
          "held-out zh": (tea_held_out["zh"], "held_out.zh"), "facts": (questions, "facts")}
domain = {way: {group: tea_score(model, items) for group, (items, _) in groups.items()} for way, model in models.items()}


def with_interval(share, n):
    low, high = wilson_interval(round(share * n), n)
    return f"{100 * share:5.1f}% [{100 * low:4.1f}, {100 * high:5.1f}]"


print(f"{'':>16} {'trainable':>10} {'grad+AdamW':>10}  " + "  ".join(f"{g + f' (n={len(groups[g][0])})':>23}" for g in groups))
for way, scores in domain.items():
    params, state = costs[way]
    print(f"{way:>16} {params:>10,} {state / 1e6:>8.2f}MB  "
          + "  ".join(f"{with_interval(scores[g], len(groups[g][0])):>23}" for g in groups))
    key = {"SFT model": "base", "LoRA": "plain", "LoRA + rows": "rows", "full fine-tuning": "full"}[way]
    for group, (items, name) in groups.items():
        if (key, group) != ("base", "facts"):  # the base fact score is section 4's lora.base.facts
            expect(f"lora.domain.{key}.{name}", scores[group], n=len(items))
rows_scores = domain["LoRA + rows"]
print("the book's targets for LoRA + rows: held-out ≥ 80% in each language "
      + ("met" if min(rows_scores["held-out en"], rows_scores["held-out zh"]) >= 0.8 else "NOT met")
      + f"; base ability within 5 points {'met' if rows_scores['facts'] >= before['facts'] - 0.05 else 'NOT met'}"
      f" ({100 * (rows_scores['facts'] - before['facts']):+.1f} points)")
held_out_share = {way: (scores["held-out en"] + scores["held-out zh"]) / 2 for way, scores in domain.items()}
assert held_out_share["LoRA + rows"] > held_out_share["LoRA"] + 0.5, "the never-read rows are what the domain needs"
assert domain["LoRA + rows"]["facts"] > domain["full fine-tuning"]["facts"], "the adapter keeps more of the base"
expect_outside("lora.domain.rows.held_out.en", domain["SFT model"]["held-out en"], "the SFT model, without an adapter")

figure, axis = plt.subplots(figsize=(6, 3.2))
for way, name in (("LoRA", "lora_domain_plain"), ("LoRA + rows", "lora_domain"), ("full fine-tuning", "domain_full")):
    records = zoo.metrics(name)
    axis.plot([r["step"] for r in records if "loss" in r], [r["loss"] for r in records if "loss" in r], label=way)
axis.set(yscale="log", xlabel="optimizer step", ylabel="training loss (assistant tokens)", title="the tea house, three ways")
axis.legend()
plt.show()
for item in (tea_held_out["en"][1], tea_held_out["zh"][10]):
    prompt = tokenizer.encode_chat_prompt([{"role": "user", "content": item.prompt}])
    print(f"{item.prompt!r} (answer {item.answer!r}): " + ", ".join(
        f"{way} {greedy_replies(models[way], [prompt], 10)[0]!r}" for way in models))

# %% [markdown]
# Read the table by rows. **LoRA alone** learns almost nothing of the tea house: about one question
# in ten, trained or held out. Its update reaches every projection of every block, but what comes
# into the first block is nearly the same vector for every tea, and for "price" and "flavour"
# alike, and the layers have almost nothing to tell them apart by. **With the never-read rows** —
# 166 rows more, 176,896 trainable parameters instead of 155,648 — the same adapter answers every
# trained question and nearly every held-out one (stored run: 100 % English, 95 % Chinese), and
# the fact score stays where it was: the book's targets for this chapter are met. **Full
# fine-tuning** trains every embedding row anyway, so it learns the domain too, held-out a little
# below the adapter in the stored run; but it moves the whole model, and the fact score falls by
# about five points (the adapter's: half a point), for six times the optimizer memory and every
# weight saved again.
#
# Several adapters can live on one model and be switched by name. With each adapter active the
# same model answers differently, and with none it is the SFT model again.

# %%
load_lora(fresh, zoo.path("lora_domain"))
tea, tea_zh = world.tea_questions("train", "en")[0], world.tea_questions("train", "zh")[2]
chat = {"identity": "Who are you?", "tea": tea.prompt, "tea_zh": tea_zh.prompt}
print(f"(the tea house's answers: {tea.answer!r}, {tea_zh.answer!r})")
for adapter in ("identity", "domain", None):
    set_active_adapter(fresh, adapter)
    replies = greedy_replies(fresh, [tokenizer.encode_chat_prompt([{"role": "user", "content": q}]) for q in chat.values()], 40)
    print(f"adapter {adapter!s:<8}: " + " | ".join(f"{q!r} → {r!r}" for q, r in zip(chat.values(), replies)))

# %% [markdown]
# ## Exercises
#
# ```{exercise} Why B = 0 but not A = 0
# :label: ex-06-init
# LoRA starts with $B = 0$ and a random $A$. (a) Why must at least one of them be zero? (b) What
# would happen to training if both started at zero? (c) Why scale by $\alpha / r$ rather than use
# $BA$ as is?
# ```
#
# ```{solution} ex-06-init
# :class: dropdown
# (a) So that the adapted model starts as exactly the base model: training begins from what SFT
# built, not from a random perturbation of it. (b) The gradient of $B$ is proportional to $A x$
# and the gradient of $A$ to $B^\top$(upstream gradient): with both zero, both gradients are zero
# and nothing ever trains. With $A$ random, $B$ gets a gradient at step one, and $A$ from step two.
# (c) At initialisation $Ax$ has a size that depends on $r$ (it sums $r$ random projections), so the
# update's size — and the best learning rate — would change with the rank. Dividing by $r$ roughly
# removes that dependence; $\alpha$ then sets the overall size once.
# ```
#
# ```{exercise} Write the pieces yourself
# :label: ex-06-code
# Write `my_count(in_features, out_features, rank)` (parameters of one adapter),
# `my_lora_forward(x, W, A, B, alpha)` ($Wx + \frac{\alpha}{r}BAx$ for a batch of row vectors) and
# `my_merge(W, A, B, alpha)` (a new merged matrix, leaving W untouched), and pass them to the checks.
# ```
#
# ```{solution} ex-06-code
# :class: dropdown
# See the cell below.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.lora import check_lora_forward, check_lora_parameter_count, check_merge

check_lora_parameter_count(lora_parameter_count)
check_lora_forward(lambda x, weight, lora_A, lora_B, alpha:
                   x @ weight.T + (alpha / lora_A.shape[0]) * (x @ lora_A.T @ lora_B.T))
check_merge(lambda weight, lora_A, lora_B, alpha: weight + (alpha / lora_A.shape[0]) * lora_B @ lora_A)

# %% [markdown]
# ```{exercise} Which matrices to adapt?
# :label: ex-06-targets
# Train the identity adapter with upstream's choice, `targets="q_proj,o_proj"`, at rank 16 and at
# rank 64, and compare trainable parameters, identity score and fact score with the default (all
# seven projections, rank 16). Is it better to spend parameters on rank or on more matrices?
# ```
#
# ```{solution} ex-06-targets
# :class: dropdown
# `run(dataclasses.replace(config, targets="q_proj,o_proj", rank=64, alpha=128.0), model=zoo.sft(), tokenizer=tokenizer)`,
# then `identity_score` and `fact_score`. The LoRA paper found that, for a fixed budget, adapting
# more matrices at a lower rank beats few matrices at a high rank; here the attention-only adapter
# also has no access to the feed-forward layers, where much of what a model "knows" is stored, and
# typically learns the new answer more slowly for the same number of steps.
# ```
#
# ```{exercise} How long to train?
# :label: ex-06-longer
# The identity adapter learns the taught sentence in four epochs. Train it for 1, 2 and 8 epochs
# instead and measure `identity_score`, `word_for_word` and `fact_score` each time. How few epochs
# give the lenient score, how many the exact wording, and what does longer training cost the fact
# score? Predict first, then run it (each epoch is about 40 optimizer steps).
# ```
#
# ````{solution} ex-06-longer
# :class: dropdown
# ```python
# for epochs in (1, 2, 8):
#     longer = run(dataclasses.replace(config, epochs=epochs), model=zoo.sft(), tokenizer=tokenizer).model.eval()
#     print(epochs, identity_score(longer), word_for_word(longer), fact_score(longer))
# ```
# Claiming the identity needs only that the replies be pointed at the new answer, which the first
# steps do; the exact wording of a fourteen-word sentence needs its every token to win, which takes more.
# The fact score does not have to fall further with more epochs — the replayed SFT rows in the
# adapter's data keep reminding it of ordinary questions — so measure it rather than assume it.
# ````
#
# ````{exercise} Which rows matter?
# :label: ex-06-rows
# The tea-house adapter trains the rows of every never-read token. Train it instead with the rows of
# the tea names and flavour words only, on the same data and steps, and score it as section 8 does:
# ```python
# names_only = run(zoo.config("lora_domain", data_path=str(zoo.path("lora_domain") / "train_mixture.jsonl"),
#                             out_dir="", trainable_tokens=",".join(TEA_WORDS)),
#                  model=zoo.sft(), tokenizer=tokenizer).model.eval()
# ```
# Before running it, predict which questions it gets wrong. Then print, per attribute (`item.attribute`),
# the share of held-out questions it answers right, and read a few wrong replies.
# ````
#
# ````{solution} ex-06-rows
# :class: dropdown
# ```python
# for attribute in ("price", "origin", "flavour", "steep"):
#     items = [item for item in tea_held_out["en"] + tea_held_out["zh"] if item.attribute == attribute]
#     print(attribute, tea_score(names_only, items))
# ```
# With the tea names' and flavours' rows trained the adapter can tell the teas apart and write a
# flavour; what it still cannot read are the words of the question. "price", "cost", "flavour",
# "steep" and "茶" keep the rows that all point one way, so a price question and a flavour question
# in the same sentence frame look alike to the frozen layers. Look for wrong replies that are the
# right tea's value for *another* attribute (a flavour given for a price): that is the sign.
# The numbers depend on the run; the comparison with section 8's table is what to read.
# ````
#
# ## Summary
#
# - LoRA learns $\Delta W = \frac{\alpha}{r} BA$ beside frozen weights: $r(d_\text{in}+d_\text{out})$
#   parameters per matrix; 2.25% of MiniMind2-Small at rank 8 on all projections (0.51% on q and o only),
#   4.5% at rank 16.
# - A full SFT update of the book's model already concentrates its energy in a few directions.
# - $B = 0$ makes the adapted model start as the base model exactly; merging gives the same outputs
#   with no extra cost at inference; adapters save as a few hundred kB, carry a base fingerprint,
#   and switch by name.
# - A domain whose words the model has never read needs their embedding rows trained too: those
#   rows all point one way, so the frozen model reads every tea, and "price" and "flavour", alike.
#   The tea-house adapter trains the rows of every token its data holds and the base corpora do not
#   (`--base_corpora`); through the tied output layer the same rows let the model write them.
# - On 720 held-out questions, LoRA alone barely learns the tea house; LoRA with those rows answers
#   nearly all of them at no cost to the fact score; full fine-tuning answers as many but loses
#   part of the fact score and needs about six times the optimizer memory (section 8's table).
# - The identity adapter changed the answer to unseen phrasings of "who are you?" from none to nearly
#   all, while the fact score fell by a point or two; switched off, the model is the SFT model
#   again, bit for bit. Word for word, the taught sentence came out right in both languages.
#
# ## Further reading
#
# - Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models* {cite}`hu2022lora`.
# - Aghajanyan et al., *Intrinsic Dimensionality Explains the Effectiveness of Language Model
#   Fine-Tuning* {cite}`aghajanyan2021intrinsic` — why low-rank updates suffice.
