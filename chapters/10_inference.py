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
# # Chapter 10 — Inference and deployment: sampling, the KV cache, serving and export
#
# A trained model is a function from tokens to a probability distribution over the next token.
# Everything a user experiences — the variety of its answers, its loops, its speed, the chat
# window, the API a program calls, the file someone runs on a laptop — is decided *after*
# training, by how we turn those distributions into text and where we run it. This chapter
# builds that last stage: the sampling rules, a cached decoding loop, a chat interface, an
# OpenAI-compatible server, and exports for transformers, vLLM, llama.cpp and Ollama.
#
# **Learning objectives**
#
# - derive temperature, top-k and top-p (nucleus) sampling and implement them from scratch;
# - explain why a KV cache turns quadratic decoding work into linear work, and measure the speed-up;
# - see how and why a small model falls into repetition loops, and what a repetition penalty does about it;
# - chat with the model trained in chapters 4–5, stream its replies, and serve it over HTTP to the `openai` client;
# - export the model to a transformers folder and to GGUF, and check that both compute what ours computes.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import io
import math
import socket
import tempfile
import time
import warnings
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from minimind import zoo
from minimind.checks.bands import expect
from minimind.data.synthetic import build_world
from minimind.eval import is_correct
from minimind.generate import (SamplingParams, generate, generate_batch, sample_next_token, stream_generate,
                               top_k_filter, top_p_filter)
from minimind.inference import stream_reply

torch.manual_seed(0)
warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # CJK tokens in plot labels
# A model this small decodes one token in well under a millisecond of arithmetic: thread start-up and
# synchronisation would cost more than they save (and make timings noisy on a shared machine).
torch.set_num_threads(1)
tokenizer = zoo.tokenizer()
model = zoo.sft()  # the chat model of chapter 5 (CPU, eval mode)
world = build_world(seed=0)
print(f"SFT model: {model.num_parameters() / 1e6:.2f}M parameters, vocabulary {model.config.vocab_size}, "
      f"context {model.config.max_position_embeddings} tokens")

# %% [markdown]
# ## 10.1 One step of generation: a distribution over the vocabulary
#
# Given the prompt so far, the model returns one logit $z_i$ per vocabulary entry; the
# next-token distribution is their softmax, $p_i = e^{z_i} / \sum_j e^{z_j}$. Generation
# repeats one step: pick a token from $p$, append it, run the model again. Let us look at a
# real distribution: the first token of the SFT model's answer to a question about one of the
# people of the synthetic world.

# %%
person = world.sft_people[0]
question = f"In which city is {person.name}'s home?"
prompt = tokenizer.encode_chat_prompt([{"role": "user", "content": question}])
with torch.no_grad():
    logits = model(torch.tensor([prompt])).logits[0, -1].float()
probs = logits.softmax(-1)
top = probs.topk(8)
print(f"Q: {question}   (true answer: {person.city})")
for p, token_id in zip(top.values.tolist(), top.indices.tolist()):
    print(f"  {tokenizer.decode([token_id])!r:>14}  p = {p:.4f}")
print(f"probability mass of the top 8 tokens: {top.values.sum():.4f}")
right = tokenizer.encode(person.city)[0]
print(f"the right city's first token, {tokenizer.decode([right])!r}, is ranked "
      f"{int((probs > probs[right]).sum()) + 1} with p = {probs[right]:.4f}")
expect("inference.p_right_city", probs[right])

# %% [markdown]
# The model is not sure: it spreads its bet over several first tokens, and the most likely one
# need not be the right answer. *How* we pick from this distribution therefore changes what the
# user reads — sometimes right, sometimes wrong, sometimes nonsense.
#
# ## 10.2 Temperature
#
# Dividing the logits by a temperature $T>0$ before the softmax reshapes the distribution
# without changing the order of the tokens:
#
# $$p_i(T) = \frac{e^{z_i/T}}{\sum_j e^{z_j/T}}.$$
#
# For two tokens, $p_i(T)/p_j(T) = e^{(z_i - z_j)/T}$: as $T \to 0$ the ratio between the best
# token and any other grows without bound, so $p(T)$ tends to a one-hot vector on the argmax —
# **greedy decoding is the limit $T\to 0$**, which is why `temperature=0` must mean "take the
# argmax" rather than a division by zero (upstream MiniMind divides). As $T\to\infty$ every
# ratio tends to 1 and $p(T)$ tends to the uniform distribution. In between, the entropy
# $H(T) = -\sum_i p_i(T)\log p_i(T)$ grows monotonically with $T$ (its derivative is
# $\mathrm{Var}_{p(T)}[z]/T^3 \ge 0$).

# %%
def softmax_with_temperature(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """p_i = exp(z_i / T) / sum_j exp(z_j / T), computed stably (subtract the max first)."""
    scaled = z / temperature
    scaled = scaled - scaled.max()
    weights = scaled.exp()
    return weights / weights.sum()


def entropy(p: torch.Tensor) -> float:
    p = p[p > 0]
    return float(-(p * p.log()).sum())


temperatures = [0.1, 0.25, 0.5, 0.7, 1.0, 1.5, 2.0, 4.0]
entropies = [entropy(softmax_with_temperature(logits, t)) for t in temperatures]
for t, h in zip(temperatures, entropies):
    print(f"T = {t:4.2f}   entropy = {h:.4f} nats   p(best token) = {softmax_with_temperature(logits, t).max():.4f}")
print(f"uniform distribution over {len(logits)} tokens: {math.log(len(logits)):.4f} nats")
assert all(a < b for a, b in zip(entropies, entropies[1:])), "entropy must grow with temperature"
assert torch.allclose(softmax_with_temperature(logits, 0.7), torch.softmax(logits / 0.7, -1), atol=1e-6)
# minimind: temperature 0 is greedy, not a division by zero
assert int(sample_next_token(logits[None], temperature=0.0)) == int(logits.argmax())

# How often does sampling start the answer with the right city? Exact probability and 2000 seeded draws.
generator = torch.Generator().manual_seed(0)
for t in (0.3, 0.7, 1.0, 1.5):
    draws = sample_next_token(logits.repeat(2000, 1), temperature=t, generator=generator)
    print(f"T = {t:3.1f}: p(right first token) = {softmax_with_temperature(logits, t)[right]:.4f}, "
          f"drawn {float((draws == right).float().mean()):.4f} of 2000 times")
    exact, drawn = float(softmax_with_temperature(logits, t)[right]), float((draws == right).float().mean())
    assert abs(drawn - exact) < 4 * math.sqrt(exact * (1 - exact) / 2000) + 1e-3  # within 4 standard errors

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
shown = logits.topk(12).indices
labels = [repr(tokenizer.decode([i]))[1:-1] for i in shown.tolist()]
for ax, t in zip(axes, (0.5, 1.0, 2.0)):
    ax.bar(range(len(shown)), softmax_with_temperature(logits, t)[shown].numpy(), color="tab:blue")
    ax.set_xticks(range(len(shown)), labels, rotation=60, fontsize=8)
    ax.set_title(f"T = {t}")
axes[0].set_ylabel("probability")
fig.suptitle("The same next-token distribution at three temperatures (12 most likely tokens)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 10.3 Top-k and top-p (nucleus) sampling
#
# Even at a moderate temperature, thousands of unlikely tokens share a visible slice of the
# probability mass, and sampling one of them derails the text. Two filters cut the tail before
# sampling and renormalise what is left:
#
# - **top-k** keeps the $k$ most likely tokens {cite}`fan2018hierarchical`;
# - **top-p** keeps the smallest set $V_p$ of most likely tokens whose probabilities add up to at
#   least $p$ {cite}`holtzman2020curious`: sort $p_{(1)} \ge p_{(2)} \ge \dots$ and keep token $(r)$
#   while the mass before it, $\sum_{s<r} p_{(s)}$, is still below $p$.
#
# Top-p adapts to the shape of the distribution: where the model is sure, the nucleus is one or
# two tokens; where it is unsure, it is wide. Temperature is applied first, so it changes how many
# tokens the nucleus holds. Both from scratch, then compared with `minimind.generate`:

# %%
def top_k_mask(z: torch.Tensor, k: int) -> torch.Tensor:
    """True for the tokens whose logit is at least the k-th largest."""
    return z >= z.topk(k).values[-1]


def top_p_mask(p: torch.Tensor, top_p: float) -> torch.Tensor:
    """True for the nucleus: most likely tokens until their mass reaches top_p."""
    sorted_p, order = p.sort(descending=True)
    mass_before = sorted_p.cumsum(0) - sorted_p
    keep_sorted = mass_before < top_p
    keep_sorted[0] = True
    keep = torch.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return keep


for k in (1, 5, 50):
    assert torch.equal(top_k_mask(logits, k), torch.isfinite(top_k_filter(logits[None], k)[0]))
for t in (0.7, 1.0):
    for p_ in (0.5, 0.9, 0.95):
        ours = top_p_mask(softmax_with_temperature(logits, t), p_)
        assert torch.equal(ours, torch.isfinite(top_p_filter(logits[None] / t, p_)[0])), (t, p_)
print("from-scratch top-k and top-p masks equal minimind.generate's filters")
for t in (0.5, 0.7, 1.0, 1.5):
    sizes = [int(top_p_mask(softmax_with_temperature(logits, t), p_).sum()) for p_ in (0.5, 0.9, 0.99)]
    print(f"T = {t:3.1f}: nucleus sizes for p = 0.5 / 0.9 / 0.99 -> {sizes}")

# %% [markdown]
# Move the sliders: the bars are the distribution after temperature; grey bars are the tokens
# the nucleus drops (they will never be sampled), and the title says how many survive.

# %% tags=["nbval-check-output"]
def filtered_chart(temperature: float, top_p: float) -> bytes:
    """PNG of the 15 most likely tokens after temperature; grey = dropped by the nucleus."""
    p = softmax_with_temperature(logits, temperature)
    keep = top_p_mask(p, top_p)
    shown = p.topk(15).indices
    fig, ax = plt.subplots(figsize=(8, 3))
    colours = ["tab:blue" if keep[i] else "lightgrey" for i in shown.tolist()]
    ax.bar(range(len(shown)), p[shown].numpy(), color=colours)
    ax.set_xticks(range(len(shown)), [repr(tokenizer.decode([i]))[1:-1] for i in shown.tolist()], rotation=60, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"T = {temperature:.2f}, top-p = {top_p:.2f}: {int(keep.sum())} tokens kept")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


temperature_slider = widgets.FloatSlider(value=0.7, min=0.05, max=3.0, step=0.05, description="temperature")
top_p_slider = widgets.FloatSlider(value=0.9, min=0.05, max=1.0, step=0.01, description="top-p")
chart = widgets.Image(value=filtered_chart(0.7, 0.9), format="png")


def redraw(_change=None):
    chart.value = filtered_chart(temperature_slider.value, top_p_slider.value)


temperature_slider.observe(redraw, names="value")
top_p_slider.observe(redraw, names="value")
display(widgets.VBox([widgets.HBox([temperature_slider, top_p_slider]), chart]))

# %% [markdown]
# ## 10.4 The KV cache: why decoding does not need to recompute the past
#
# In a causal transformer, the keys and values of position $t$ depend only on tokens
# $\le t$. So when we append token $T+1$, the keys and values of positions $1..T$ are exactly
# what they were one step earlier. A naive loop recomputes them anyway: generating $n$ tokens
# after a prompt of length $P$ runs the model over $P+1, P+2, \dots, P+n$ positions — about
# $nP + n^2/2$ position-passes. Keeping every layer's keys and values in a **KV cache** means each
# step runs the model on one new token and attends over the cached past: $n$ position-passes
# plus attention reads. `minimind` preallocates the cache once (prompt + new tokens) instead of
# growing it by concatenation each step as upstream does. The cache costs memory:
#
# $$\text{bytes} = 2 \times \text{layers} \times \text{KV heads} \times \text{head dim} \times \text{tokens} \times \text{bytes per value}.$$
#
# First, a naive greedy loop from scratch; it must produce exactly the tokens of the cached one.

# %%
def naive_greedy(model, prompt_ids, max_new_tokens):
    """Greedy decoding that re-runs the whole sequence every step (no cache)."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(next_id)
    return ids[len(prompt_ids):]


continuation_prompt = tokenizer.encode(f"{person.name} lives in")
pretrained = zoo.pretrained()
cached = generate(pretrained, continuation_prompt, max_new_tokens=48, stop_token_ids=())
assert naive_greedy(pretrained, continuation_prompt, 48) == cached
print("naive loop == cached loop, token for token:")
print(repr(tokenizer.decode(continuation_prompt + cached)))
config = model.config
per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4
print(f"KV cache of the book model: {per_token} bytes per token in fp32, "
      f"{per_token * config.max_position_embeddings / 2**20:.2f} MiB for its full {config.max_position_embeddings}-token context")

# %%
def seconds(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


lengths = [32, 96, 192]
naive_s = [seconds(lambda n=n: naive_greedy(pretrained, continuation_prompt, n)) for n in lengths]
cached_s = [seconds(lambda n=n: generate(pretrained, continuation_prompt, max_new_tokens=n, stop_token_ids=()))
            for n in lengths]
for n, a, b in zip(lengths, naive_s, cached_s):
    print(f"{n:4d} new tokens: naive {n / a:7.1f} tokens/s   cached {n / b:7.1f} tokens/s   speed-up {a / b:5.2f}x")
speedup = naive_s[-1] / cached_s[-1]
assert speedup > 1.5, f"the KV cache should clearly pay off at {lengths[-1]} tokens (got {speedup:.2f}x)"
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(lengths, naive_s, "o-", label="naive (recompute everything)")
ax.plot(lengths, cached_s, "o-", label="KV cache")
ax.set_xlabel("new tokens")
ax.set_ylabel("seconds")
ax.legend()
ax.set_title("Greedy decoding time")
fig.tight_layout()
plt.show()

# %% [markdown]
# Batching is the other lever: several prompts decode together, one forward pass per step for
# the whole batch. Prompts of different lengths are **left-padded** so that every row's last
# token sits in the same column, and each row's real tokens get positions $0, 1, 2, \dots$
# whatever padding precedes them (upstream gives padded rows shifted positions). The check that
# matters: a batch decodes to exactly what each prompt decodes to alone.

# %%
questions = [item.prompt for item in world.questions("sft", "train", "en")[:4]]
chat_prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": q}]) for q in questions]
print("prompt lengths:", [len(p) for p in chat_prompts])
batched = generate_batch(model, chat_prompts, max_new_tokens=16)
alone = [generate(model, p, max_new_tokens=16) for p in chat_prompts]
assert batched == alone
for q, answer in zip(questions, batched):
    print(f"{q!r:>48} -> {tokenizer.decode(answer)!r}")

# %% [markdown]
# ## 10.5 Repetition, and the repetition penalty
#
# Greedy decoding of a small model often ends in a loop. Once a phrase has appeared, attention
# can copy it ("induction" behaviour: find an earlier occurrence of the current token, predict what
# followed it), the copy makes the next copy even more likely, and greedy decoding never takes the
# small step away. The CTRL repetition penalty {cite}`keskar2019ctrl` makes every token already in
# the context less likely: its logit is divided by $\theta>1$ if positive and multiplied by
# $\theta$ if negative (either way it moves down). We measure repetition as the share of 4-grams
# of the continuation that already occurred earlier in it, and print the end of each continuation
# (of the pretrained model of chapter 4, which continues text rather than answering).

# %%
def repeated_ngram_share(ids, n=4):
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / max(len(grams), 1)


loop_prompt = tokenizer.encode(f"{person.name} is")
penalties = [1.0, 1.1, 1.2, 1.3, 1.5]
shares = []
for penalty in penalties:
    out = generate(pretrained, loop_prompt, max_new_tokens=120, stop_token_ids=(), repetition_penalty=penalty)
    shares.append(repeated_ngram_share(out))
    print(f"penalty {penalty:3.1f}: repeated 4-grams {shares[-1]:.3f}  | …{tokenizer.decode(out[-36:])!r}")
assert shares[-1] < shares[0], "a stronger penalty should repeat less"
expect("inference.repeated_4grams.penalty_1.0", shares[0])
expect("inference.repeated_4grams.penalty_1.5", shares[-1])
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(penalties, shares, "o-")
ax.set_xlabel("repetition penalty θ")
ax.set_ylabel("share of repeated 4-grams")
ax.set_title("Greedy continuation, 120 tokens")
fig.tight_layout()
plt.show()

# %% [markdown]
# The penalty is blunt: it also punishes tokens the text *should* repeat (a name, digits of a
# number, the word "the"), which is why strong penalties garble factual answers. Sampling with a
# moderate temperature and top-p breaks most loops without that cost; a better-trained model
# loops less in the first place.
#
# ## 10.6 Chatting with the model
#
# `minimind.inference.stream_reply` renders the conversation with the chat template, decodes token
# by token, and streams text pieces as soon as they form whole characters (a Chinese character
# spans several byte-level tokens). Here the SFT model answers, greedily, questions worded as in
# its training set and *rewordings* it never saw, in both languages (the same exact-match scoring
# as chapter 5).

# %%
greedy = SamplingParams(temperature=0.0, max_new_tokens=24)


def ask(question: str) -> str:
    reply = stream_reply(model, tokenizer, [{"role": "user", "content": question}], greedy)
    return "".join(piece for _, piece in reply)  # the pieces, as a chat window would print them


for wording in ("train", "reworded"):
    for lang in ("en", "zh"):
        items = world.questions("sft", wording, lang)[:20]
        replies = [ask(item.prompt) for item in items]
        score = sum(is_correct(r, item.answer) for r, item in zip(replies, items)) / len(items)
        print(f"{wording:>8} wording, {lang}: exact match {score:.0%} on {len(items)} questions")
        expect(f"inference.exact_match.{wording}.{lang}", score, n=len(items))
        for item, r in list(zip(items, replies))[:3]:
            print(f"    {'✓' if is_correct(r, item.answer) else '✗'} {item.prompt} -> {r!r} (expected {item.answer!r})")

# %% [markdown]
# A conversation is the same call with the history in `messages`. The command line does this
# interactively: `python -m minimind.chat --model sft` (or `minimind chat`) keeps the history,
# streams each reply, and prints tokens/s; `--prompt "…"` answers once for scripts, `--think`
# opens a `<think>` block for a reasoning model and `--thinking_budget N` caps it. The web demo
# is `minimind web` (Streamlit).

# %%
conversation = [{"role": "user", "content": f"How old is {person.name}?"}]
for follow_up in (None, f"And where does {person.name} live?"):
    if follow_up:
        conversation.append({"role": "user", "content": follow_up})
    reply = stream_reply(model, tokenizer, conversation, greedy)
    list(reply)
    conversation.append({"role": "assistant", "content": reply.content})
for message in conversation:
    print(f"{message['role']:>9}: {message['content']}")
print(f"(true: {person.age}, {person.city})")

# %% [markdown]
# ## 10.7 An OpenAI-compatible server
#
# `python -m minimind.serve --model sft` starts a FastAPI app on `127.0.0.1:8998` with OpenAI's
# `/v1/chat/completions` (streaming as server-sent events or not), `/v1/models` and `/health`.
# Any OpenAI client talks to it. Generation runs on one worker thread, so concurrent requests
# queue and each gets its complete answer. We start it as a subprocess on a free local port,
# call it with the official `openai` package, and stop it.

# %%
from openai import OpenAI

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen([sys.executable, "-m", "minimind.serve", "--model", str(zoo.path("sft")),
                           "--tokenizer", str(zoo.path("tokenizer")), "--port", str(port), "--device", "cpu"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed", max_retries=0)
try:
    for _ in range(600):
        try:
            client.models.list()
            break
        except Exception:
            time.sleep(0.2)
    print("models:", [m.id for m in client.models.list().data])
    question = f"How old is {person.name}?"
    completion = client.chat.completions.create(
        model="minimind", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=16)
    print("answer:", repr(completion.choices[0].message.content), "| finish:", completion.choices[0].finish_reason,
          "| usage:", completion.usage.prompt_tokens, "+", completion.usage.completion_tokens, "tokens")
    local = stream_reply(model, tokenizer, [{"role": "user", "content": question}], SamplingParams(max_new_tokens=16))
    list(local)
    assert completion.choices[0].message.content == local.content
    stream = client.chat.completions.create(
        model="minimind", messages=[{"role": "user", "content": "Who are you?"}], temperature=0, max_tokens=24,
        stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    print(f"streamed {len(pieces)} chunks:", repr("".join(pieces)))
finally:
    server.terminate()
    server.wait(timeout=30)
print("server stopped")

# %% [markdown]
# ## 10.8 Export: transformers (and vLLM), GGUF (llama.cpp and Ollama)
#
# MiniMind's state-dict names are Llama's, so `minimind.export.transformers` writes a plain
# `LlamaForCausalLM` folder that `AutoModelForCausalLM` loads without custom code — and that
# vLLM serves as it is (`vllm serve out/minimind-hf`). We check the strongest thing we can:
# transformers' own `generate` reproduces our greedy tokens exactly.

# %%
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

transformers.logging.set_verbosity_error()  # keep the notebook's output to what we print
transformers.logging.disable_progress_bar()

from minimind.export.gguf import export_gguf
from minimind.export.transformers import export_transformers

export_root = Path(tempfile.mkdtemp(prefix="minimind-export-"))
export_transformers(model, export_root / "hf", tokenizer=tokenizer)
hf_model = AutoModelForCausalLM.from_pretrained(export_root / "hf").eval()
hf_tokenizer = AutoTokenizer.from_pretrained(export_root / "hf")
print(f"{type(hf_model).__name__} with {sum(p.numel() for p in hf_model.parameters()) / 1e6:.3f}M parameters")
for q in questions[:3]:
    ids = hf_tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
    assert list(ids) == tokenizer.encode_chat_prompt([{"role": "user", "content": q}])
    with torch.no_grad():
        hf_out = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   do_sample=False, max_new_tokens=24, eos_token_id=2, pad_token_id=0)[0, len(ids):]
    hf_tokens = [t for t in hf_out.tolist() if t != 2]
    assert hf_tokens == generate(model, ids, max_new_tokens=24)
    print(f"{q!r}: transformers and minimind agree -> {hf_tokenizer.decode(hf_tokens)!r}")

# %% [markdown]
# How fast is our loop compared with transformers' `generate` on the same weights? At this
# size a decoding step is dominated by per-token Python and dispatch overhead rather than by
# arithmetic, so a lean loop matters (the numbers depend on the machine; `make bench`
# measures them, and `benchmarks/README.md` records a run).

# %%
bench_prompt = list(range(10, 26))
n_new = 200
ours_s, hf_s = [], []
for _ in range(3):  # alternate the two contenders, keep medians
    ours_s.append(seconds(lambda: generate(model, bench_prompt, max_new_tokens=n_new, stop_token_ids=()), 1))
    with torch.no_grad():
        hf_s.append(seconds(lambda: hf_model.generate(torch.tensor([bench_prompt]), attention_mask=torch.ones(1, 16, dtype=torch.long),
                                                      do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                                                      pad_token_id=0), 1))
ours_rate, hf_rate = n_new / sorted(ours_s)[1], n_new / sorted(hf_s)[1]
print(f"greedy, batch 1, {n_new} new tokens: minimind {ours_rate:.0f} tokens/s, transformers {hf_rate:.0f} tokens/s "
      f"({ours_rate / hf_rate:.2f}x)")
assert ours_rate > hf_rate, "our decoding loop should beat transformers' generate at this size"

# %% [markdown]
# GGUF is the single-file format of llama.cpp and Ollama. Two details decide whether llama.cpp
# computes what we compute. Its `llama` architecture rotates *adjacent* pairs of each head,
# $(x_{2i}, x_{2i+1})$, while we (like transformers) rotate the two halves, $(x_i, x_{i+d/2})$; so
# the exporter permutes the rows of $W_q$ and $W_k$ head by head to move each half-pair side by
# side. And its pre-tokenizer must split text as ours does: digits one by one, then GPT-2's regex
# — llama.cpp's `starcoder` pre-tokenizer. The tests of `minimind.export.gguf` run a forward pass
# written from llama.cpp's conventions on the file's tensors and get our logits back; here we read
# the file back and look at it.

# %% tags=["nbval-check-output"]
from gguf import GGUFReader

gguf_path = export_gguf(model, tokenizer, export_root / "minimind.gguf", dtype="f16")
reader = GGUFReader(gguf_path)
for key in ("general.architecture", "llama.block_count", "llama.embedding_length", "llama.attention.head_count_kv",
            "llama.context_length", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id"):
    print(f"{key:34} {reader.get_field(key).contents()}")
tokens = reader.get_field("tokenizer.ggml.tokens").contents()
assert len(tokens) == model.config.vocab_size and tokens[2] == "<|im_end|>"
n_params = sum(int(t.n_elements) for t in reader.tensors)
assert n_params == model.num_parameters()
print(f"{len(reader.tensors)} tensors, {n_params / 1e6:.3f}M parameters, file {gguf_path.stat().st_size / 2**20:.2f} MiB (f16)")
print((export_root / "Modelfile").read_text().splitlines()[0], "…  (then: ollama create minimind -f Modelfile)")

# %% [markdown]
# The same exports from the command line:
#
# ```bash
# python -m minimind.export transformers --model sft --out out/minimind-hf   # then: vllm serve out/minimind-hf
# python -m minimind.export gguf --model sft --out out/minimind.gguf --dtype f16
# cd out && ollama create minimind -f Modelfile && ollama run minimind
# ```
#
# ## Exercises
#
# ```{exercise} Why temperature 0 must be special
# :label: ex-09-temperature
# Upstream MiniMind computes `logits / temperature` unconditionally. What happens at
# `temperature=0`, and what distribution does $p(T)$ approach as $T \to 0^+$? Write
# `softmax_with_temperature(logits, temperature)` yourself and check it with
# `minimind.checks.inference.check_temperature_softmax`.
# ```
#
# ```{solution} ex-09-temperature
# :class: dropdown
# Dividing by zero gives $\pm\infty$ (and `nan` for a zero logit), so softmax returns `nan`s and
# sampling fails. As $T\to 0^+$, $p_i/p_j = e^{(z_i-z_j)/T}\to\infty$ for the largest $z_i$, so
# $p(T)$ tends to the one-hot vector on the argmax: temperature 0 should *be* greedy decoding.
# Subtracting the maximum logit before exponentiating keeps the computation finite for any $T>0$.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.inference import (check_incremental_decode, check_repetition_penalty, check_temperature_softmax,
                                       check_top_p)

check_temperature_softmax(softmax_with_temperature)

# %% [markdown]
# ```{exercise} Top-p by hand
# :label: ex-09-top-p
# Write `top_p_mask(probs, p)` returning the boolean mask of the nucleus, and check it with
# `check_top_p`. Then answer: for $p = 0.9$, is the nucleus larger at $T = 0.5$ or at $T = 1.5$
# for the distribution of section 10.1? Why?
# ```
#
# ```{solution} ex-09-top-p
# :class: dropdown
# The mask of section 10.3 passes. A higher temperature flattens the distribution, so more tokens
# are needed to reach 90% of the mass: the nucleus is larger at $T=1.5$ (the table of section 10.3
# shows it growing with $T$).
# ```

# %% tags=["nbval-check-output"]
check_top_p(top_p_mask)

# %% [markdown]
# ```{exercise} The repetition penalty
# :label: ex-09-penalty
# Implement `penalize(logits, previous_ids, penalty)` (CTRL's rule, each distinct previous token
# penalised once) and check it with `check_repetition_penalty`. Why does the rule divide positive
# logits but *multiply* negative ones?
# ```
#
# ```{solution} ex-09-penalty
# :class: dropdown
# Dividing a negative logit by $\theta > 1$ would move it *up*, towards zero, making the token more
# likely; multiplying moves it down. Both branches lower the token's logit.
# ```

# %% tags=["nbval-check-output"]
def penalize(logits, previous_ids, penalty):
    logits = logits.clone()
    seen = torch.tensor(sorted(set(previous_ids)))
    values = logits[seen]
    logits[seen] = torch.where(values > 0, values / penalty, values * penalty)
    return logits


check_repetition_penalty(penalize)

# %% [markdown]
# ```{exercise} Streaming text without broken characters
# :label: ex-09-stream
# Decoding each token on its own prints `�` for the pieces of a Chinese character. Write
# `stream_pieces(tokenizer, ids)` returning one text piece per id such that no piece contains
# `'\ufffd'` and the pieces join to `tokenizer.decode(ids)`; check it with
# `check_incremental_decode(stream_pieces, tokenizer)`. (Hint: decode a growing window and release
# text only when it does not end in `'\ufffd'`.)
# ```
#
# ```{solution} ex-09-stream
# :class: dropdown
# Keep the ids so far; after each new id decode them all, and release the part of the text beyond
# what was released before — unless it ends in `'\ufffd'`, in which case release nothing yet.
# `minimind.generate.IncrementalDecoder` does the same over a short window of recent tokens, so
# each step costs O(1) instead of O(length).
# ```

# %% tags=["nbval-check-output"]
def stream_pieces(tokenizer, ids):
    pieces, released = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end])
        if text.endswith("\ufffd") and end < len(ids):
            pieces.append("")
            continue
        pieces.append(text[len(released):])
        released = text
    return pieces


check_incremental_decode(stream_pieces, tokenizer)

# %% [markdown]
# ```{exercise} Experiment: temperature against correctness
# :label: ex-09-experiment
# Answer the 20 reworded questions of section 10.6 with `temperature` 0, 0.7, 1.0 and 1.5
# (`top_p=1.0`, five seeds each). Plot exact match against temperature. Then repeat with
# `top_p=0.9`. Which setting would you use for a factual assistant, and which for story writing?
# ```
#
# ```{solution} ex-09-experiment
# :class: dropdown
# Exact match falls as temperature rises, because probability mass moves to wrong values; top-p
# slows the fall by never sampling the long tail. A factual assistant wants greedy or low
# temperature; open-ended writing trades some accuracy for variety (T≈0.7–1.0 with top-p≈0.9).
# ```
#
# ## Summary
#
# - Generation is a loop over next-token distributions. Temperature reshapes them (0 = greedy),
#   top-k and top-p cut their tails; we built each and checked it against `minimind.generate`,
#   whose filters equal transformers' logits processors.
# - The KV cache removes the recomputation of the past; on this model it gave the speed-up
#   measured in 10.4, and batched, left-padded decoding gives the same tokens as decoding alone.
# - Small models loop under greedy decoding; the CTRL penalty reduces repetition, bluntly.
# - One `stream_reply` serves the chat CLI, the web demo and an OpenAI-compatible server that
#   the official client talks to.
# - The transformers export reproduces our greedy tokens exactly; the GGUF export carries the
#   permuted rotary weights and the matching pre-tokenizer for llama.cpp and Ollama.
#
# ## Further reading
#
# - Holtzman et al., *The Curious Case of Neural Text Degeneration* — nucleus sampling and why
#   greedy text degenerates {cite}`holtzman2020curious`.
# - Keskar et al., *CTRL* — the repetition penalty {cite}`keskar2019ctrl`.
# - Pope et al., *Efficiently Scaling Transformer Inference* — KV caches, batching and latency
#   {cite}`pope2023inference`.
# - Kwon et al., *Efficient Memory Management for Large Language Model Serving with PagedAttention*
#   (vLLM) {cite}`kwon2023vllm`.
# - MiniMind, the project this book re-creates {cite}`gong2024minimind`.
