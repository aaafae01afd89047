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
# # Chapter 3 — The transformer: attention, RoPE, GQA, MoE
#
# This chapter builds MiniMind's network one piece at a time: scaled dot-product attention
# with its causal mask, grouped-query heads, rotary position embeddings, RMSNorm, the SwiGLU
# feed-forward, the mixture of experts and the KV cache. Each piece is written from scratch
# in a few lines, then compared with the same piece in `minimind.model` by an `assert`, so
# by the end you know every line of the model the rest of the book trains. The chapter
# closes by counting the 25.83 million parameters of MiniMind2-Small, component by component.
#
# **Learning objectives**
# - Derive and implement causal scaled dot-product attention, and read an attention map.
# - Explain multi-head, grouped-query and multi-query attention and compute their KV-cache memory.
# - Derive rotary embeddings and prove numerically that attention scores depend only on relative position.
# - Compare RMSNorm with LayerNorm, and SwiGLU with a plain MLP.
# - Route tokens through a mixture of experts and see what the load-balancing loss does.
# - Show that a KV cache gives the same logits as recomputation, and measure its speed-up.
# - Account for every parameter of MiniMind2-Small.
#
# **Estimated time:** 90 minutes to read and run. Notebook run time: {chapter-time}`cpu`.

# %%
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %%
import math
import random
import time

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

import minimind.model as mm
from minimind import zoo
from minimind.config import YARN_ROPE_SCALING, get_config
from minimind.checks.bands import expect
from minimind.model import KVCache, MiniMind
from minimind.runtime import replica_seed

torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(1)  # tiny tensors: a second thread costs more in synchronisation than it saves
print("torch", torch.__version__)

# %% [markdown]
# ## 1. Scaled dot-product attention and the causal mask
#
# Each token's hidden vector is projected three ways: a **query** $q_t$ (what am I looking
# for?), a **key** $k_s$ (what do I contain?) and a **value** $v_s$ (what do I hand over?).
# Token $t$ mixes the values of the tokens it may see, weighted by how well its query matches
# their keys {cite}`vaswani2017attention`:
#
# $$
# \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d}} + M\right) V,
# \qquad M_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t \end{cases}
# $$
#
# The mask $M$ makes the model **causal**: a language model predicts token $t+1$ from tokens
# $\le t$, so it must never peek at the future; $e^{-\infty} = 0$ removes those weights.
#
# Why divide by $\sqrt{d}$? If the entries of $q$ and $k$ are independent with variance 1,
# $q\cdot k = \sum_{i=1}^{d} q_i k_i$ has variance $d$. Without the scale, the scores of a
# 64-dimensional head have a standard deviation of 8 and the softmax saturates into a
# one-hot vector whose gradient is almost zero. The numbers below show it.

# %%
generator = torch.Generator().manual_seed(0)
print(f"{'d':>5} {'std(q·k)':>9} {'std(q·k)/√d':>12}")
for d in (16, 64, 256):
    q, k = torch.randn(20000, d, generator=generator), torch.randn(20000, d, generator=generator)
    dots = (q * k).sum(-1)
    print(f"{d:>5} {dots.std():>9.2f} {(dots / math.sqrt(d)).std():>12.2f}")
    assert abs(dots.std() / math.sqrt(d) - 1) < 0.05


# %% [markdown]
# Now the function itself, from scratch. Shapes: `(B, H, T, d)` — batch, heads, positions, head size.

# %%
def causal_attention(q, k, v, return_weights=False):
    """softmax(q·kᵀ/√d + causal mask) · v for q, k, v of shape (B, H, T, d)."""
    T, d = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)  # True above the diagonal
    scores = scores.masked_fill(future, float("-inf"))
    weights = scores.softmax(dim=-1)
    out = weights @ v  # (B, H, T, d)
    return (out, weights) if return_weights else out


q, k, v = torch.randn(3, 2, 4, 10, 16).unbind(0)
ours = causal_attention(q, k, v)
reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
print(f"max |ours - torch SDPA| = {(ours - reference).abs().max():.1e}")
assert torch.allclose(ours, reference, atol=1e-5)

from minimind.checks.model import check_causal_attention

check_causal_attention(causal_attention)

# %% [markdown]
# ### An attention map on a real sentence
#
# Take a sentence from the book's synthetic corpus, tokenized with the book's tokenizer
# (chapter 1). Attention is a *similarity lookup*: to see that, let the queries and keys be
# the token embeddings themselves ($q_t = k_t = e_{x_t}$). Each token then attends most to
# earlier copies of itself — the second ` Foman` finds the first. Next to it: the weights of
# the first head of an (untrained) `book` model from `minimind`, taken from the model's
# explicit attention path (`return_attentions=True`). An untrained model spreads its
# attention almost evenly over the visible prefix; chapter 4 trains it.

# %%
tokenizer = zoo.tokenizer()
sentence = "The pet of Foman is a hamster. Foman has made a home in Hennam."
ids = torch.tensor([tokenizer.encode(sentence)])
labels = [tokenizer.decode([i]) for i in ids[0].tolist()]
print(len(labels), "tokens:", labels)

torch.manual_seed(0)
book = MiniMind(get_config("book")).eval()
embeddings = book.model.embed_tokens(ids).detach()  # (1, T, 128)
embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True) * 6  # unit length × 6: a sharp softmax
_, similarity_weights = causal_attention(embeddings[:, None], embeddings[:, None], embeddings[:, None], True)

with torch.no_grad():
    out = book(ids, return_attentions=True)
model_weights = out.attentions[0][0, 0]  # layer 0, batch 0, head 0: (T, T)
assert torch.allclose(model_weights.sum(-1), torch.ones(len(labels)), atol=1e-6)  # each row is a distribution
assert torch.all(model_weights.triu(diagonal=1) == 0)  # nothing from the future
first_foman = labels.index(" Foman")
second_foman = labels.index(" Foman", first_foman + 1)
earlier_focus = int(similarity_weights[0, 0, second_foman, :second_foman].argmax())
print(f"' Foman' at position {second_foman} attends most (among earlier tokens) to position {earlier_focus}: "
      f"{labels[earlier_focus]!r}")
assert earlier_focus == first_foman

fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
for ax, weights, title in ((axes[0], similarity_weights[0, 0], "q = k = token embedding"),
                           (axes[1], model_weights, "untrained book model, layer 0 head 0")):
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Multi-head, grouped-query and multi-query attention
#
# One attention function looks for one kind of relation. **Multi-head attention** runs $H$
# of them side by side on $d = \text{hidden}/H$-dimensional slices and concatenates the
# results. At generation time every past key and value must be kept (section 7): that
# memory grows with the number of *key/value* heads. **Multi-query attention**
# {cite}`shazeer2019mqa` shares one K/V head among all query heads; **grouped-query
# attention** {cite}`ainslie2023gqa` — MiniMind's choice — shares each K/V head among a
# group of $H/H_{kv}$ query heads (MiniMind2-Small: 8 query heads, 2 K/V heads, groups of 4).
# Query head $j$ reads K/V head $\lfloor j / (H/H_{kv}) \rfloor$.

# %% tags=["nbval-check-output"]
def repeat_kv(x, n_rep):
    """(B, KV, T, d) → (B, KV·n_rep, T, d): each K/V head serves n_rep consecutive query heads."""
    B, KV, T, d = x.shape
    return x[:, :, None].expand(B, KV, n_rep, T, d).reshape(B, KV * n_rep, T, d)


from minimind.checks.model import check_repeat_kv

check_repeat_kv(repeat_kv)


# %% [markdown]
# The rotary embedding (section 3) is part of attention too; here it is, written with complex
# numbers, the form in which it is derived below. Then the whole attention layer from scratch.

# %%
def rope(x, positions, theta=1e6):
    """Rotate x (..., T, d): channel pair (i, i + d/2) as the complex number x_i + j·x_{i+d/2},
    multiplied by e^{j·position·θ^(-2i/d)}."""
    d = x.size(-1)
    freqs = theta ** (-torch.arange(0, d, 2).float() / d)  # (d/2,)
    angles = positions[:, None].float() * freqs  # (T, d/2)
    z = torch.complex(x[..., : d // 2], x[..., d // 2 :]) * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag], dim=-1)


class ScratchAttention(nn.Module):
    """Grouped-query causal self-attention with RoPE, written for reading."""

    def __init__(self, hidden, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.d = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.d, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.d, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.d, bias=False)
        self.o_proj = nn.Linear(heads * self.d, hidden, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        positions = torch.arange(T)
        q = self.q_proj(x).view(B, T, self.heads, self.d).transpose(1, 2)  # (B, H, T, d)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.d).transpose(1, 2)  # (B, KV, T, d)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.d).transpose(1, 2)
        q, k = rope(q, positions), rope(k, positions)
        group = self.heads // self.kv_heads
        out = causal_attention(q, repeat_kv(k, group), repeat_kv(v, group))
        return self.o_proj(out.transpose(1, 2).reshape(B, T, self.heads * self.d))


config = get_config("book")
library_attention = mm.Attention(config)
scratch_attention = ScratchAttention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads)
scratch_attention.load_state_dict(library_attention.state_dict())  # same parameter names
x = torch.randn(2, 16, config.hidden_size)
cos, sin = mm.precompute_rope(config.head_dim, 16, config.rope_theta)
with torch.no_grad():
    difference = (scratch_attention(x) - library_attention(x, cos, sin)[0]).abs().max().item()
print(f"max |scratch - minimind.model.Attention| = {difference:.1e}")
assert difference < 1e-5

# %% [markdown]
# GQA with as many K/V heads as query heads *is* multi-head attention, and a GQA layer equals
# an MHA layer whose K/V projections repeat each K/V head over its group — that is all
# `repeat_kv` does:

# %%
mha = mm.Attention(get_config("book", num_key_value_heads=4))
with torch.no_grad():
    mha.q_proj.weight.copy_(library_attention.q_proj.weight)
    mha.o_proj.weight.copy_(library_attention.o_proj.weight)
    for name in ("k_proj", "v_proj"):
        per_head = getattr(library_attention, name).weight.view(2, config.head_dim, config.hidden_size)
        getattr(mha, name).weight.copy_(per_head.repeat_interleave(2, dim=0).reshape(-1, config.hidden_size))
    difference = (mha(x, cos, sin)[0] - library_attention(x, cos, sin)[0]).abs().max().item()
print(f"GQA (2 KV heads) vs MHA with repeated K/V weights: max |Δ| = {difference:.1e}")
assert difference < 1e-5


# %% [markdown]
# ### KV-cache memory: MHA vs GQA vs MQA
#
# A cache stores, for each layer, a key and a value of size $d$ for every K/V head and every
# past token:
#
# $$ \text{bytes} = 2 \cdot L \cdot H_{kv} \cdot d \cdot T \cdot \text{bytes per number}. $$
#
# For MiniMind2-Small ($L = 8$, $d = 64$) in fp16, at a 512-token chat and at the full 32k context:

# %% tags=["nbval-check-output"]
def kv_cache_bytes(config, num_tokens, bytes_per_value):
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * num_tokens * bytes_per_value


from minimind.checks.model import check_kv_cache_bytes

check_kv_cache_bytes(kv_cache_bytes)

variants = {"MHA (8 KV heads)": 8, "GQA (2 KV heads)": 2, "MQA (1 KV head)": 1}
lengths = (512, 32768)
memory = {}
print(f"{'':18}" + "".join(f"{n:>12} tokens" for n in lengths))
for label, kv_heads in variants.items():
    variant = get_config("minimind2-small", num_key_value_heads=kv_heads)
    memory[label] = [kv_cache_bytes(variant, n, 2) for n in lengths]
    for n, predicted in zip(lengths, memory[label]):  # the real cache object agrees (meta device: no memory used)
        assert KVCache(variant, 1, n, torch.float16, device="meta").memory_bytes() == predicted
    print(f"{label:18}" + "".join(f"{b / 2**20:>12,.0f} MiB   " for b in memory[label]))
assert memory["GQA (2 KV heads)"][1] == 128 * 2**20 and memory["MHA (8 KV heads)"][1] == 512 * 2**20

fig, ax = plt.subplots(figsize=(7, 3.8))
width = 0.25
for i, (label, values) in enumerate(memory.items()):
    ax.bar([j + (i - 1) * width for j in range(len(lengths))], [b / 2**20 for b in values], width, label=label)
ax.set_xticks(range(len(lengths)), [f"{n:,} tokens" for n in lengths])
ax.set_yscale("log")
ax.set_ylabel("KV cache per sequence (MiB, fp16)")
ax.set_title("MiniMind2-Small: cache memory by attention variant")
ax.legend()
plt.show()

# %% [markdown]
# GQA cuts the cache (and the memory traffic of every decoding step) by 4× relative to MHA;
# the number of query heads, and so the attention *compute*, is unchanged.
#
# ## 3. Rotary position embeddings (RoPE)
#
# Attention by itself is blind to order: permute the keys and the weights permute with them.
# RoPE {cite}`su2024roformer` injects position by **rotating** queries and keys. Pair up
# channels $(i, i + d/2)$ and read each pair as a complex number $z_i = x_i + \mathrm{j}\,x_{i+d/2}$.
# At position $m$, multiply by $e^{\mathrm{j} m\theta_i}$ with $\theta_i = \text{base}^{-2i/d}$
# (MiniMind: base $10^6$). For a query at position $m$ and a key at position $n$, the
# score is
#
# $$
# \operatorname{Re}\sum_i \big(q_i e^{\mathrm{j} m\theta_i}\big)\,\overline{\big(k_i e^{\mathrm{j} n\theta_i}\big)}
# = \operatorname{Re}\sum_i q_i \bar{k}_i\, e^{\mathrm{j}(m-n)\theta_i},
# $$
#
# a function of $m - n$ only: **scores depend on relative position**, although each vector
# was rotated by its absolute position. In real arithmetic the rotation is
# $x \cos + \operatorname{rotate\_half}(x) \sin$ with $\operatorname{rotate\_half}(x) = (-x_{d/2:}, x_{:d/2})$,
# the "rotate-half" layout of GPT-NeoX, Llama and MiniMind. Our complex `rope` above must equal it:

# %%
from minimind.checks.model import check_rope

check_rope(rope)
head_dim = 64
cos, sin = mm.precompute_rope(head_dim, 4096, theta=1e6)
x = torch.randn(1, 1, 4096, head_dim)
library_rotated, _ = mm.apply_rotary(x, x, cos, sin)
difference = (rope(x, torch.arange(4096)) - library_rotated).abs().max().item()
# fp32 rounding of position × frequency grows with the position: ~1e-4 at position 4095
print(f"max |complex rope - minimind.model.apply_rotary| over 4096 positions = {difference:.0e}")
assert difference < 1e-3

# %% [markdown]
# The numeric proof: one query and one key, placed at many absolute positions with the same
# distance $m - n = 3$, give one score; other distances give other scores.

# %%
generator = torch.Generator().manual_seed(3)
q, k = torch.randn(head_dim, generator=generator), torch.randn(head_dim, generator=generator)


def rope_score(m, n):
    return (rope(q[None], torch.tensor([m])) * rope(k[None], torch.tensor([n]))).sum().item()


print(f"{'query pos':>9} {'key pos':>8} {'distance':>8} {'score':>9}")
same_distance = []
for m, n in ((3, 0), (10, 7), (100, 97), (1000, 997), (3003, 3000)):
    same_distance.append(rope_score(m, n))
    print(f"{m:>9} {n:>8} {m - n:>8} {same_distance[-1]:>9.4f}")
for m, n in ((10, 0), (10, 9)):
    print(f"{m:>9} {n:>8} {m - n:>8} {rope_score(m, n):>9.4f}")
spread = max(same_distance) - min(same_distance)
print(f"spread of the distance-3 scores: {spread:.1e}")
assert spread < 1e-3
assert abs(rope_score(10, 0) - same_distance[0]) > 0.1

# %% [markdown]
# What the rotation looks like. Left: one channel pair of a vector at positions 0–7 for a
# fast pair ($i = 0$, one radian per position) and a slow one ($i = 8$). Right: $\cos(m\theta_i)$ for the first 128 positions —
# the fast channels (left columns) spin, the slow ones barely move, so together they encode
# both fine and coarse position. Below: with $q = k$ all ones, the score decays (with
# ripples) as the distance grows, RoFormer's "long-term decay".

# %%
fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
point = torch.zeros(1, head_dim)
point[0, 0] = point[0, 8] = 1.0  # the first channel of pair 0 and of pair 8
for m in range(8):
    rotated = rope(point, torch.tensor([m]))[0]
    for pair, color in ((0, "tab:blue"), (8, "tab:orange")):
        axes[0].arrow(0, 0, rotated[pair].item(), rotated[pair + head_dim // 2].item(), color=color,
                      alpha=0.3 + 0.09 * m, head_width=0.04, length_includes_head=True)
axes[0].set_xlim(-1.2, 1.2)
axes[0].set_ylim(-1.2, 1.2)
axes[0].set_aspect("equal")
axes[0].set_title("pair 0 (blue) and pair 8 (orange), positions 0–7")
axes[1].imshow(cos[:128].numpy(), aspect="auto", cmap="RdBu")
axes[1].set_xlabel("channel")
axes[1].set_ylabel("position")
axes[1].set_title("cos(position · θ_i)")
ones = torch.ones(head_dim)
distances = torch.arange(0, 2048, 4)
decay = [(rope(ones[None], torch.tensor([int(t)])) * rope(ones[None], torch.tensor([0]))).sum().item() for t in distances]
axes[2].plot(distances.numpy(), decay)
axes[2].set_xscale("symlog")
axes[2].set_xlabel("relative distance m − n")
axes[2].set_ylabel("score with q = k = 1")
axes[2].set_title("long-term decay")
plt.tight_layout()
plt.show()
assert decay[0] == max(decay)

# %% [markdown]
# ### Longer contexts: YaRN
#
# A model trained on 2,048 positions has never seen the slow channels turn further than
# $2048\,\theta_i$. YaRN {cite}`peng2024yarn` stretches exactly those channels by a factor $s$
# (MiniMind: 16) and leaves the fast ones, whose many turns the model already knows, alone,
# with a linear ramp in between. `precompute_rope(..., rope_scaling=YARN_ROPE_SCALING)` does this:

# %%
plain_cos, plain_sin = mm.precompute_rope(64, 32768, 1e6)
yarn_cos, yarn_sin = mm.precompute_rope(64, 32768, 1e6, YARN_ROPE_SCALING)
plain_freq = torch.atan2(plain_sin[1, :32], plain_cos[1, :32])  # angle per position of each pair
yarn_freq = torch.atan2(yarn_sin[1, :32], yarn_cos[1, :32])
ratio = plain_freq / yarn_freq
print("wavelength stretch per channel pair:", " ".join(f"{r:.1f}" for r in ratio.tolist()))
assert torch.allclose(ratio[:4], torch.ones(4), atol=1e-3) and torch.allclose(ratio[-4:], torch.full((4,), 16.0), rtol=1e-3)

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.semilogy((2 * math.pi / plain_freq).numpy(), "o-", label="RoPE")
ax.semilogy((2 * math.pi / yarn_freq).numpy(), "s-", label="YaRN, factor 16")
ax.axhline(2048, color="gray", ls="--", label="original context 2048")
ax.set_xlabel("channel pair i")
ax.set_ylabel("wavelength (positions)")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. RMSNorm vs LayerNorm
#
# LayerNorm centres and scales each vector: $\mathrm{LN}(x) = w \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + b$.
# RMSNorm {cite}`zhang2019rmsnorm` drops the centring and the bias:
#
# $$ \mathrm{RMSNorm}(x) = w \odot \frac{x}{\sqrt{\tfrac{1}{n}\sum_i x_i^2 + \epsilon}}. $$
#
# It is cheaper (one reduction instead of two), has half the parameters, and works as well in
# practice. LayerNorm is RMSNorm applied to the centred vector; RMSNorm keeps only the
# invariance to rescaling $x \to c\,x$, not to shifts $x \to x + c$.

# %%
def rms_norm(x, weight, eps=1e-5):
    return weight * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def layer_norm(x, weight, bias, eps=1e-5):
    centred = x - x.mean(-1, keepdim=True)
    return weight * centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) + bias


x = torch.randn(4, 128) * 3 + 1
library_norm = mm.RMSNorm(128, eps=1e-5)
with torch.no_grad():
    library_norm.weight.uniform_(0.5, 1.5)
weight = library_norm.weight.detach()
assert torch.allclose(rms_norm(x, weight), library_norm(x), atol=1e-5)
assert torch.allclose(rms_norm(x, weight), F.rms_norm(x, (128,), weight, 1e-5), atol=1e-5)  # PyTorch's own
assert torch.allclose(layer_norm(x, weight, torch.zeros(128)), F.layer_norm(x, (128,), weight, None, 1e-5), atol=1e-5)
assert torch.allclose(layer_norm(x, weight, torch.zeros(128)), rms_norm(x - x.mean(-1, keepdim=True), weight), atol=1e-5)

print(f"{'change of input':>16} {'RMSNorm moves by':>17} {'LayerNorm moves by':>19}")
zero_bias = torch.zeros(128)
for name, changed in (("x · 7", x * 7), ("x + 5", x + 5)):
    rms_move = (rms_norm(changed, weight) - rms_norm(x, weight)).abs().max().item()
    ln_move = (layer_norm(changed, weight, zero_bias) - layer_norm(x, weight, zero_bias)).abs().max().item()
    print(f"{name:>16} {rms_move:>17.4f} {ln_move:>19.4f}")
print("parameters at hidden 512:  RMSNorm", 512, " LayerNorm", 2 * 512)


# %% [markdown]
# ## 5. The SwiGLU feed-forward
#
# After attention has mixed information *between* tokens, the feed-forward network transforms
# each token on its own. MiniMind uses SwiGLU {cite}`shazeer2020glu`: one projection is passed
# through $\mathrm{SiLU}(z) = z\,\sigma(z)$ and gates another, element by element:
#
# $$ \mathrm{FFN}(x) = W_\text{down}\big(\mathrm{SiLU}(W_\text{gate}x) \odot W_\text{up}x\big). $$
#
# With three matrices instead of two, the inner width is $\tfrac{8}{3}h$ instead of $4h$, so
# the parameter count matches a classic GELU MLP; MiniMind rounds up to a multiple of 64
# ($h = 512 \to 1408$).

# %%
def swiglu(x, gate_weight, up_weight, down_weight):
    return F.linear(F.silu(F.linear(x, gate_weight)) * F.linear(x, up_weight), down_weight)


config = get_config("minimind2-small")
ffn = mm.FeedForward(get_config("book"))
x = torch.randn(3, 128)
with torch.no_grad():
    difference = (swiglu(x, ffn.gate_proj.weight, ffn.up_proj.weight, ffn.down_proj.weight) - ffn(x)).abs().max().item()
print(f"max |scratch SwiGLU - minimind.model.FeedForward| = {difference:.1e}")
assert difference < 1e-6
h, inner = config.hidden_size, config.intermediate_size
print(f"hidden {h}: SwiGLU 3·{h}·{inner} = {3 * h * inner:,} parameters; GELU MLP 2·{h}·{4 * h} = {2 * h * 4 * h:,}")
assert inner == 1408 and abs(3 * h * inner / (2 * h * 4 * h) - 1) < 0.04

z = torch.linspace(-5, 5, 201)
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, values in (("ReLU", F.relu(z)), ("GELU", F.gelu(z)), ("SiLU (the gate of SwiGLU)", F.silu(z))):
    ax.plot(z.numpy(), values.numpy(), label=name)
ax.legend()
ax.set_xlabel("z")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 6. Mixture of experts
#
# A mixture-of-experts layer {cite}`shazeer2017moe` replaces the one feed-forward network by
# $E$ of them (the **experts**) plus a **router** $W_r$. For each token the router's
# probabilities $p = \operatorname{softmax}(W_r x)$ pick the top $k$ experts; the output is their
# weighted sum, with weights renormalised to sum to 1 when $k > 1$. MiniMind2-MoE also has a
# **shared expert** that every token goes through, holding what all tokens need, so the routed
# experts can specialise {cite}`dai2024deepseekmoe`:
#
# $$ y = \sum_{e \in \operatorname{top}_k(p)} \frac{p_e}{\sum_{e' \in \operatorname{top}_k} p_{e'}}\, \mathrm{FFN}_e(x) + \mathrm{FFN}_\text{shared}(x). $$
#
# Parameters grow with $E$, compute per token only with $k$. Upstream minimind-3 renormalises
# even at $k = 1$, where the weight becomes exactly 1 and the language-model loss no longer
# reaches the router (its issue #858); `minimind` keeps the raw probability at $k = 1$.

# %%
def top_k_routing(router_logits, k):
    probs = router_logits.softmax(dim=-1)
    weights, index = probs.topk(k, dim=-1)
    if k > 1:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, index


def moe_forward(x, router_weight, experts, shared_experts, k):
    """Token by token: (N, hidden) → (N, hidden)."""
    weights, index = top_k_routing(x @ router_weight.T, k)
    out = torch.zeros_like(x)
    for t in range(x.size(0)):
        for slot in range(k):
            out[t] += weights[t, slot] * experts[int(index[t, slot])](x[t])
        for shared in shared_experts:
            out[t] += shared(x[t])
    return out


from minimind.checks.model import check_top_k_routing

check_top_k_routing(top_k_routing)
torch.manual_seed(0)
moe = mm.MoEFeedForward(get_config("tiny-moe")).eval()
x = torch.randn(1, 12, 64)
with torch.no_grad():
    ours = moe_forward(x[0], moe.gate.weight, moe.experts, moe.shared_experts, k=2)
    library_out, _ = moe(x)
print(f"max |token-by-token MoE - minimind.model.MoEFeedForward| = {(ours - library_out[0]).abs().max():.1e}")
assert torch.allclose(ours, library_out[0], atol=1e-5)

moe_config = get_config("minimind2-moe")
expert = 3 * moe_config.hidden_size * moe_config.intermediate_size
inactive = (moe_config.n_routed_experts - moe_config.num_experts_per_tok) * expert * moe_config.num_hidden_layers
print(f"MiniMind2-MoE: {moe_config.num_parameters() / 1e6:.2f}M parameters, "
      f"{(moe_config.num_parameters() - inactive) / 1e6:.2f}M active per token (top-2 of 4 routed + 1 shared)")
assert round(moe_config.num_parameters() / 1e6, 2) == 145.03

# %% [markdown]
# ### Load balancing
#
# Nothing stops the router from sending most tokens to a few experts: those then train
# faster, look better, and attract even more tokens. The auxiliary loss of Switch Transformer
# {cite}`fedus2022switch` pushes back. With $f_e$ the share of the $N k$ routing choices that
# went to expert $e$ and $P_e$ the mean router probability of $e$,
#
# $$ \mathcal{L}_\text{aux} = \alpha \sum_{e=1}^{E} (E f_e)\, P_e , $$
#
# which is $\alpha$ when routing is uniform and grows when choices and probabilities pile up
# on the same experts ($f$ is not differentiable; the gradient flows through $P$). MiniMind2
# computes it per sequence and averages (`seq_aux`). Counting every one of the $k$ choices
# keeps the scale right for any $k$ (upstream minimind-3 kept a $[k, E]$ axis, issue #797).
#
# The experiment: train a small MoE language model (8 experts, top-2, one shared) on the
# synthetic corpus for 150 steps, once without and once with the auxiliary loss, and count
# how the tokens of held-out text are routed in each layer.

# %%
from minimind.data.synthetic import dataset_path
from minimind.data.jsonl import texts_from_jsonl
from minimind.tokenizer import EOS_ID

stream = []
for text in texts_from_jsonl(dataset_path("pretrain", "train"), max_docs=3000):
    stream += tokenizer.encode(text) + [EOS_ID]  # documents separated by <|im_end|>
sequences = torch.tensor(stream[: len(stream) // 64 * 64]).view(-1, 64)
held_out, train_sequences = sequences[:32], sequences[32:]
print(f"{len(train_sequences)} training sequences of 64 tokens")


def expert_loads(model, batch):
    """Share of the routing choices each expert received, per layer: (layers, experts)."""
    loads = []
    hooks = [layer.mlp.register_forward_hook(
        lambda module, inputs, output: loads.append(
            torch.bincount(module.route(inputs[0])[2].flatten(), minlength=module.num_experts).float()))
        for layer in model.model.layers]
    with torch.no_grad():
        model(batch)
    for hook in hooks:
        hook.remove()
    loads = torch.stack(loads)
    return loads / loads.sum(-1, keepdim=True)


def train_moe(aux_loss_alpha, steps=150):
    torch.manual_seed(replica_seed(0))  # 0, or the replicate's seed when the book measures its spread
    moe_config = get_config("tiny-moe", vocab_size=2048, n_routed_experts=8, aux_loss_alpha=aux_loss_alpha)
    model = MiniMind(moe_config)
    before = expert_loads(model.eval(), held_out)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(replica_seed(0))
    model.train()
    for step in range(steps):
        batch = train_sequences[torch.randint(len(train_sequences), (16,), generator=generator)]
        out = model(batch, labels=batch)
        optimizer.zero_grad()
        (out.loss + out.aux_loss).backward()
        optimizer.step()
    return before, expert_loads(model.eval(), held_out), out.loss.item()


results = {alpha: train_moe(alpha) for alpha in (0.0, 0.1)}
for alpha, (before, after, loss) in results.items():
    print(f"aux_loss_alpha={alpha}: final LM loss {loss:.2f}")
    for layer in range(after.size(0)):
        print(f"  layer {layer} before: " + " ".join(f"{v:.2f}" for v in before[layer].tolist())
              + " | after: " + " ".join(f"{v:.2f}" for v in after[layer].tolist()))

# %% [markdown]
# The busiest expert's share tells the story (uniform is $1/8 = 0.125$):

# %%
busiest = {alpha: after.max().item() for alpha, (_, after, _) in results.items()}
idle = {alpha: after.min().item() for alpha, (_, after, _) in results.items()}
print(f"without aux loss: busiest expert {busiest[0.0]:.2f}, least used {idle[0.0]:.2f}")
print(f"with aux loss:    busiest expert {busiest[0.1]:.2f}, least used {idle[0.1]:.2f}")
assert busiest[0.1] < busiest[0.0] and idle[0.1] > idle[0.0]
for alpha, tag in ((0.0, "without_aux"), (0.1, "with_aux")):  # ranges measured across seeds and CPUs
    expect(f"model.moe.{tag}.busiest", busiest[alpha])
    expect(f"model.moe.{tag}.least_used", idle[alpha])
    expect(f"model.moe.{tag}.final_loss", results[alpha][2])

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6), sharey=True)
panels = (("at initialisation", results[0.0][0]), ("trained, no aux loss", results[0.0][1]),
          ("trained, aux loss α = 0.1", results[0.1][1]))
for ax, (title, loads) in zip(axes, panels):
    for layer in range(loads.size(0)):
        ax.bar(torch.arange(8) + (layer - 0.5) * 0.4, loads[layer].numpy(), 0.4, label=f"layer {layer}")
    ax.axhline(1 / 8, color="gray", ls="--")
    ax.set_title(title)
    ax.set_xlabel("expert")
axes[0].set_ylabel("share of routing choices")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 7. The KV cache
#
# Generating token $t+1$ needs the keys and values of tokens $0..t$. Without a cache, every
# step recomputes them all: $O(T^2)$ work for $T$ tokens. The keys and values of past tokens
# never change (the mask hides the future from them), so we can keep them and feed only the new
# token, whose query attends to the stored keys. In a cache the causal mask aligns to the *last*
# $T$ of the $S$ keys: query $t$ may see key $s$ iff $s \le t + (S - T)$.
#
# First from scratch, for one attention layer with a cache that grows by concatenation:

# %%
layer = scratch_attention.eval()
x = torch.randn(1, 10, get_config("book").hidden_size)


@torch.no_grad()
def step_with_cache(layer, x_new, position, cache):
    """One token (1, 1, hidden) at `position`; cache = {'k': (1, KV, t, d), 'v': …} grows by one."""
    B = x_new.size(0)
    q = layer.q_proj(x_new).view(B, 1, layer.heads, layer.d).transpose(1, 2)
    k = layer.k_proj(x_new).view(B, 1, layer.kv_heads, layer.d).transpose(1, 2)
    v = layer.v_proj(x_new).view(B, 1, layer.kv_heads, layer.d).transpose(1, 2)
    q, k = rope(q, torch.tensor([position])), rope(k, torch.tensor([position]))
    cache["k"] = k if cache.get("k") is None else torch.cat([cache["k"], k], dim=2)
    cache["v"] = v if cache.get("v") is None else torch.cat([cache["v"], v], dim=2)
    group = layer.heads // layer.kv_heads
    keys, values = repeat_kv(cache["k"], group), repeat_kv(cache["v"], group)
    weights = (q @ keys.transpose(-2, -1) / math.sqrt(layer.d)).softmax(-1)  # the newest token sees everything
    return layer.o_proj((weights @ values).transpose(1, 2).reshape(B, 1, -1))


cache = {}
incremental = torch.cat([step_with_cache(layer, x[:, t : t + 1], t, cache) for t in range(10)], dim=1)
with torch.no_grad():
    full = layer(x)
print(f"one attention layer, cached steps vs full recomputation: max |Δ| = {(incremental - full).abs().max():.1e}")
assert torch.allclose(incremental, full, atol=1e-5)

# The tolerance is tight enough to catch a wrong cache: one that rotates every new token as if it
# stood at position 0 (forgetting its place in the sequence) is off by orders of magnitude more.
cache = {}
forgetful = torch.cat([step_with_cache(layer, x[:, t : t + 1], 0, cache) for t in range(10)], dim=1)
print(f"a cache that forgets the positions: max |Δ| = {(forgetful - full).abs().max():.1e}")
assert not torch.allclose(forgetful, full, atol=1e-5)

# %% [markdown]
# `torch.cat` copies the whole cache at every step — $O(T^2)$ bytes moved over a generation
# (upstream MiniMind does this). `minimind.model.KVCache` preallocates one buffer per layer,
# writes each step in place, and doubles the buffer only if it runs out. It also records
# which slots hold padding and each row's next position, so in a left-padded batch every
# row's real tokens are at positions 0, 1, 2, … (upstream shifts them by the padding).
# The whole `book` model, prompt then one token at a time, against full recomputation:

# %%
torch.manual_seed(0)
book = MiniMind(get_config("book")).eval()
sequence = torch.randint(3, 2048, (1, 96), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    full_logits = book(sequence).logits
    out = book(sequence[:, :32], use_cache=True)
    pieces = [out.logits]
    for t in range(32, 96):
        out = book(sequence[:, t : t + 1], cache=out.cache, use_cache=True)
        pieces.append(out.logits)
difference = (torch.cat(pieces, dim=1) - full_logits).abs().max().item()
print(f"book model, 32-token prompt + 64 cached steps vs full recomputation: max |Δ| = {difference:.1e}")
print(f"cache: {out.cache.length} tokens, {out.cache.memory_bytes():,} bytes preallocated")
assert difference < 1e-4


# %% [markdown]
# And the speed-up, generating 192 tokens greedily after a 32-token prompt (times depend on the
# machine, so this cell's printout is not checked; the assert is):

# %%
@torch.no_grad()
def greedy(model, prompt, new_tokens, use_cache):
    tokens = prompt
    out = model(tokens, use_cache=use_cache)
    for _ in range(new_tokens):
        next_token = out.logits[:, -1:].argmax(-1)
        tokens = torch.cat([tokens, next_token], dim=1)
        out = model(next_token, cache=out.cache, use_cache=True) if use_cache else model(tokens)
    return tokens


prompt = sequence[:, :32]
timings = {}
for use_cache in (False, True, False, True):  # alternate, keep the faster of two runs
    start = time.perf_counter()
    generated = greedy(book, prompt, 192, use_cache)
    timings[use_cache] = min(timings.get(use_cache, float("inf")), time.perf_counter() - start)
    if use_cache:
        cached_tokens = generated
    else:
        recomputed_tokens = generated
assert torch.equal(cached_tokens, recomputed_tokens)  # same tokens either way
speedup = timings[False] / timings[True]
print(f"without cache {timings[False]:.2f} s, with cache {timings[True]:.2f} s: speed-up {speedup:.1f}x")
assert speedup > 1

# %% [markdown]
# The gap grows with the length: without a cache each step costs $O(t)$ token passes, with
# a cache $O(1)$ token passes (plus an attention read over $t$ stored keys).
#
# ## 8. The whole model: blocks, the final norm and tied embeddings
#
# Every piece is built; the model stacks them. A **block** is pre-norm and residual: each of its two
# sub-layers reads a normalised copy of the stream and *adds* its output back,
#
# $$ h = x + \operatorname{Attention}(\operatorname{RMSNorm}(x)), \qquad
#    y = h + \operatorname{SwiGLU}(\operatorname{RMSNorm}(h)), $$
#
# so the stream $x$ itself is never normalised and gradients reach the first layer through the
# additions unchanged. The **model** embeds the tokens, runs `num_hidden_layers` blocks, normalises
# once more (the **final norm**: the stream has grown through the additions), and turns each
# position into logits with the *same* matrix that embedded the tokens (**tied embeddings**:
# $\text{logits} = \hat{x} E^\top$, saving $V \cdot d$ parameters — an eighth of MiniMind2-Small).
# Every matrix starts from $\mathcal{N}(0, 0.02^2)$ and every norm gain at 1.

# %%
class ScratchBlock(nn.Module):
    """Pre-norm residual block built from this chapter's pieces."""

    def __init__(self, config):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.eps = config.rms_norm_eps
        self.attention_norm = nn.Parameter(torch.ones(hidden))
        self.attention = ScratchAttention(hidden, config.num_attention_heads, config.num_key_value_heads)
        self.mlp_norm = nn.Parameter(torch.ones(hidden))
        self.gate, self.up = nn.Linear(hidden, inner, bias=False), nn.Linear(hidden, inner, bias=False)
        self.down = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):  # (B, T, hidden) → (B, T, hidden)
        h = x + self.attention(rms_norm(x, self.attention_norm, self.eps))
        return h + swiglu(rms_norm(h, self.mlp_norm, self.eps), self.gate.weight, self.up.weight, self.down.weight)


class ScratchModel(nn.Module):
    """Embeddings → blocks → final norm → logits through the embedding matrix (tied)."""

    def __init__(self, config):
        super().__init__()
        self.eps = config.rms_norm_eps
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(ScratchBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.Parameter(torch.ones(config.hidden_size))
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, ids):  # (B, T) → (B, T, vocab)
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return rms_norm(x, self.final_norm, self.eps) @ self.embed.weight.T


def copy_weights(scratch, library):
    """Give the scratch model the weights of a `minimind.model.MiniMind` (same shapes, other names)."""
    with torch.no_grad():
        scratch.embed.weight.copy_(library.model.embed_tokens.weight)
        scratch.final_norm.copy_(library.model.norm.weight)
        for ours, theirs in zip(scratch.blocks, library.model.layers):
            ours.attention_norm.copy_(theirs.input_layernorm.weight)
            ours.mlp_norm.copy_(theirs.post_attention_layernorm.weight)
            ours.attention.load_state_dict(theirs.self_attn.state_dict())
            for mine, name in ((ours.gate, "gate_proj"), (ours.up, "up_proj"), (ours.down, "down_proj")):
                mine.weight.copy_(getattr(theirs.mlp, name).weight)


config = get_config("book")
torch.manual_seed(0)
scratch_model, library_model = ScratchModel(config), MiniMind(config).eval()
ours_count = sum(p.numel() for p in scratch_model.parameters())
print(f"parameters: scratch {ours_count:,}, minimind.model {library_model.num_parameters():,}, "
      f"config.num_parameters() {config.num_parameters():,}")
assert ours_count == library_model.num_parameters() == config.num_parameters()
print(f"initial weight std: scratch {scratch_model.blocks[0].gate.weight.std():.4f}, "
      f"minimind {library_model.model.layers[0].mlp.gate_proj.weight.std():.4f} (both drawn from N(0, 0.02²))")
assert abs(scratch_model.blocks[0].gate.weight.std() - 0.02) < 1e-3
assert library_model.lm_head.weight is library_model.model.embed_tokens.weight  # tied: one matrix

copy_weights(scratch_model, library_model)
ids = torch.randint(3, config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(4))
with torch.no_grad():
    difference = (scratch_model(ids) - library_model(ids).logits).abs().max().item()
print(f"4 blocks, 48 tokens: max |scratch logits - minimind.model logits| = {difference:.1e}")
assert difference < 1e-4

# %% [markdown]
# Every line of the model the rest of the book trains is now on this page: the two models compute
# the same logits from the same weights, and have the same number of parameters.
#
# ## 9. Where the 25.83 million parameters of MiniMind2-Small are
#
# Build the model on PyTorch's `meta` device (shapes only, no memory) and sum the parameters
# by component. The token embedding is shared with the output layer (tied weights), so it is
# counted once.

# %% tags=["nbval-check-output"]
config = get_config("minimind2-small")
with torch.device("meta"):
    small = MiniMind(config)


def component(name):
    if "embed_tokens" in name:
        return "token embedding (= LM head)"
    if any(p in name for p in ("q_proj", "o_proj")):
        return "attention: query + output"
    if any(p in name for p in ("k_proj", "v_proj")):
        return "attention: key + value"
    if ".mlp." in name:
        return "feed-forward (SwiGLU)"
    return "RMSNorm weights"


breakdown = {}
for name, parameter in small.named_parameters():  # tied parameters are listed once
    breakdown[component(name)] = breakdown.get(component(name), 0) + parameter.numel()
total = sum(breakdown.values())
print(f"{'component':30} {'parameters':>12} {'share':>7}")
for name, count in breakdown.items():
    print(f"{name:30} {count:>12,} {count / total:>7.1%}")
print(f"{'total':30} {total:>12,}  = {total / 1e6:.2f}M")
assert total == config.num_parameters() == 25_829_888 and round(total / 1e6, 2) == 25.83
assert breakdown["feed-forward (SwiGLU)"] == 8 * 3 * 512 * 1408
assert 0.6 < breakdown["feed-forward (SwiGLU)"] / total < 0.7

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(list(breakdown), [c / 1e6 for c in breakdown.values()])
ax.invert_yaxis()
ax.set_xlabel("parameters (millions)")
ax.set_title(f"MiniMind2-Small: {total / 1e6:.2f}M parameters")
plt.show()

# %% [markdown]
# The feed-forward layers hold two thirds of the weights; GQA makes keys and values cheap
# (a quarter of the query/output size); the 6,400-token vocabulary costs 3.3M, an eighth.
# The chapters use the `book` preset, the same architecture at CPU scale:

# %% tags=["nbval-check-output"]
for name in ("tiny", "book", "book-teacher", "minimind2-small", "minimind3", "minimind2", "minimind2-moe"):
    c = get_config(name)
    print(f"{name:16} hidden {c.hidden_size:>4} × {c.num_hidden_layers:>2} layers, heads {c.num_attention_heads}/{c.num_key_value_heads} KV, "
          f"FFN {c.intermediate_size:>4}, vocab {c.vocab_size:>5}{', MoE' if c.use_moe else ''}: {c.num_parameters() / 1e6:7.2f}M")

# %% [markdown]
# ## Exercises
#
# ```{exercise} Why the mask sits on the last keys
# :label: ex-02-cache-mask
# With a cache of $S - T$ past tokens and $T$ new ones, `minimind.model.causal_mask(T, S)` lets
# query $t$ see key $s$ iff $s \le t + (S - T)$. Why not $s \le t$? What goes wrong in a chunked
# prefill (several new tokens after a past) if one uses the ordinary $T \times T$ mask?
# ```
#
# ```{solution} ex-02-cache-mask
# :class: dropdown
# The new queries are at absolute positions $S-T, …, S-1$, and the keys at $0, …, S-1$. Query $t$
# (the $t$-th *new* token) sits at absolute position $t + (S - T)$ and may see every key up to
# that position, which includes all of the past. A $T \times T$ mask would have the wrong shape
# for $T \times S$ scores; padded or placed on the first $T$ keys it would hide the past and
# reveal future tokens of the chunk. With $T = 1$ the question disappears: the single new token
# sees everything, which is why decoding one token at a time needs no mask at all.
# ```
#
# ```{exercise} Write the KV-cache size
# :label: ex-02-kv-bytes
# Write `my_kv_cache_bytes(config, num_tokens, bytes_per_value)` returning the bytes of keys and
# values a `MiniMindConfig` needs for one sequence, and check it with
# `minimind.checks.model.check_kv_cache_bytes`. Then use it: how many 2,048-token conversations
# fit in 8 GiB of fp16 cache for `minimind2-small`, and for the same model with multi-head attention?
# ```
#
# ````{solution} ex-02-kv-bytes
# :class: dropdown
# ```python
# def my_kv_cache_bytes(config, num_tokens, bytes_per_value):
#     return (2 * config.num_hidden_layers * config.num_key_value_heads
#             * config.head_dim * num_tokens * bytes_per_value)
#
# check_kv_cache_bytes(my_kv_cache_bytes)
# gqa = my_kv_cache_bytes(get_config("minimind2-small"), 2048, 2)        # 8 MiB
# mha = my_kv_cache_bytes(get_config("minimind2-small", num_key_value_heads=8), 2048, 2)  # 32 MiB
# print(8 * 2**30 // gqa, 8 * 2**30 // mha)                              # 1024 and 256 conversations
# ```
# ````
#
# ```{exercise} Rotate-half or interleaved?
# :label: ex-02-rope-layout
# The RoFormer paper pairs channels $(2i, 2i+1)$; Llama and MiniMind pair $(i, i + d/2)$. Write
# `interleaved_rope(x, positions, theta)` and show that it differs from `minimind`'s rotation,
# yet that scores still depend only on $m - n$. Then run `check_rope` on it: which hint does it give?
# What would happen if you loaded MiniMind2 weights into a model with the other layout?
# ```
#
# ````{solution} ex-02-rope-layout
# :class: dropdown
# ```python
# def interleaved_rope(x, positions, theta=1e6):
#     d = x.size(-1)
#     freqs = theta ** (-torch.arange(0, d, 2).float() / d)
#     angles = positions[:, None].float() * freqs
#     z = torch.complex(x[..., 0::2], x[..., 1::2]) * torch.polar(torch.ones_like(angles), angles)
#     return torch.stack([z.real, z.imag], dim=-1).flatten(-2)
# ```
# The proof of section 3 holds for any pairing, so scores are still relative. `check_rope`
# fails with the hint to pair channel $i$ with $i + d/2$. Both layouts are the same rotation
# up to a fixed permutation of the channels, which $W_q$ and $W_k$ can absorb during training —
# but weights trained with one layout are wrong for the other: the rotation would mix
# channels the trained $W_q$, $W_k$ never paired, and attention would no longer see positions
# (or much else) the way it learned to. This is why
# conversion scripts for interleaved checkpoints permute the rows of `q_proj` and `k_proj`.
# ````
#
# ```{exercise} Routing experiments
# :label: ex-02-moe
# Write `my_top_k_routing(router_logits, k)` and pass it to `check_top_k_routing`. Then re-run
# `train_moe` with `num_experts_per_tok=1` (edit its `get_config` call) with and without the
# auxiliary loss. Is the collapse stronger or weaker than at $k = 2$? Finally set
# `norm_topk_prob=True` with $k=1$ and `aux_loss_alpha=0`, and check whether the router's
# weight gets any gradient.
# ```
#
# ```{solution} ex-02-moe
# :class: dropdown
# `top_k_routing` of section 6 is a solution. With $k = 1$ each token feeds one expert, so
# the rich-get-richer loop is tighter: expect the busiest expert of a layer to take a larger share of
# the tokens without the auxiliary loss than section 6's $k = 2$ run printed, and the auxiliary loss
# to pull it back towards the uniform share. `minimind` renormalises only when $k > 1$ (the flag is
# ignored at $k = 1$), so the
# router still gets a gradient from the language-model loss: its weight is the probability
# $p_e$, and $\partial y / \partial p_e = \mathrm{FFN}_e(x) \ne 0$. Had the weight been
# renormalised to $p_e / p_e = 1$, that gradient would vanish, as in upstream minimind-3.
# ```
#
# ```{exercise} RMSNorm's missing invariance
# :label: ex-02-norm
# LayerNorm is invariant to adding a constant to every channel; RMSNorm is not. Can a
# transformer with RMSNorm still learn to ignore such a shift? Where in the block could it
# be removed, and why do practitioners not miss it?
# ```
#
# ```{solution} ex-02-norm
# :class: dropdown
# A constant shift $c\mathbf{1}$ lies along one direction of the hidden space. The linear
# layers that read the normalised vector ($W_q, W_k, W_v$, $W_\text{gate}, W_\text{up}$) can learn
# to be orthogonal to $\mathbf{1}$, and the embeddings can learn to have zero mean, so the
# network can make the shift irrelevant by itself. Zhang and Sennrich found re-centring
# contributes little to LayerNorm's benefit; the re-scaling, which keeps activations at a
# fixed magnitude through the residual stream, is what matters.
# ```

# %% [markdown]
# ## Summary
#
# - Attention is $\operatorname{softmax}(QK^\top/\sqrt{d} + M)V$; the $\sqrt{d}$ keeps the
#   softmax from saturating and the causal mask hides the future.
# - GQA shares each key/value head among a group of query heads: MiniMind2-Small's cache is 4×
#   smaller than with multi-head attention (128 MiB instead of 512 MiB at 32k tokens in fp16).
# - RoPE rotates channel pairs by position-dependent angles; scores then depend only on
#   relative position (checked to $10^{-3}$ across positions 0–3003). YaRN stretches only the slow channels.
# - RMSNorm is LayerNorm without centring; SwiGLU gates one projection by the SiLU of another.
# - A MoE router picks the top-$k$ experts per token; without the load-balancing loss the
#   routing skews towards a few experts, with it the loads stay near uniform.
# - A KV cache gives the same logits as recomputation and decodes several times faster;
#   `minimind`'s is preallocated and handles left padding.
# - MiniMind2-Small has 25,829,888 parameters, two thirds of them in the feed-forward layers.
#
# ## Further reading
#
# - Vaswani et al., *Attention Is All You Need* {cite}`vaswani2017attention`.
# - Shazeer, *Fast Transformer Decoding* (MQA) {cite}`shazeer2019mqa`; Ainslie et al., *GQA* {cite}`ainslie2023gqa`.
# - Su et al., *RoFormer* {cite}`su2024roformer`; Peng et al., *YaRN* {cite}`peng2024yarn`.
# - Zhang and Sennrich, *RMSNorm* {cite}`zhang2019rmsnorm`; Shazeer, *GLU Variants* {cite}`shazeer2020glu`.
# - Shazeer et al., *Sparsely-Gated MoE* {cite}`shazeer2017moe`; Fedus et al., *Switch Transformers* {cite}`fedus2022switch`;
#   Dai et al., *DeepSeekMoE* {cite}`dai2024deepseekmoe`.
# - Touvron et al., *LLaMA* {cite}`touvron2023llama`, whose layout MiniMind2 shares.
