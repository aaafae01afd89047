# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
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
# OpenAI-compatible server, exports for transformers, vLLM, llama.cpp and Ollama, and two ways to
# decode faster — int8 weights and speculative decoding — measured for what they buy.
#
# **Learning objectives**
#
# - derive temperature, top-k and top-p (nucleus) sampling and implement them from scratch;
# - explain why a KV cache turns quadratic decoding work into linear work, and measure the speed-up;
# - see how and why a small model falls into repetition loops, and what a repetition penalty does about it;
# - chat with the model trained in chapters 4–5, stream its replies, and serve it over HTTP to the `openai` client;
# - export the model to a transformers folder and to GGUF, and check that both compute what ours computes.
# - quantise the weights to int8 per row, bound the error, and measure what it changes in answers, bytes and speed;
# - build speculative decoding, prove that it leaves the output unchanged, and measure what a distilled draft saves.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import copy
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
# ## 10.9 Fewer bytes per weight: int8
#
# Decoding one token reads every weight of the model once and does two flops with each. On a
# large model that makes a decoding step memory-bound: its time is the bytes of the weights
# divided by the memory bandwidth, and storing each weight in one byte instead of four is the
# obvious lever. **Weight-only int8** keeps the activations and the KV cache in fp32 and stores
# each matrix $W$ (out × in) as integers with one scale per output row:
#
# $$s_o = \frac{\max_i |W_{oi}|}{127}, \qquad Q_{oi} = \operatorname{round}\!\left(\frac{W_{oi}}{s_o}\right) \in [-127, 127], \qquad y_o = s_o \sum_i Q_{oi}\, x_i .$$
#
# The scale is symmetric (no zero point: trained weights are centred on zero) and per row, so one
# large weight coarsens only its own row. Rounding moves each weight by at most half a step,
# $|W_{oi} - s_o Q_{oi}| \le s_o / 2$, and because the scale factors out of the sum, a kernel can
# multiply the int8 matrix by the fp32 activations and apply $s_o$ once per output. We build the
# quantiser, check the bound on every matrix of the SFT model, and check that it is the package's
# `minimind.quantize`.

# %%
from minimind.quantize import Int8Linear, greedy_agreement, quantize_int8, quantize_per_channel


def quantize_rows(weight):
    """int8 rows and one fp32 scale per row, symmetric: each row's largest |w| becomes ±127."""
    weight = weight.detach().float()
    scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


matrices = {name: m.weight for name, m in model.model.named_modules() if isinstance(m, torch.nn.Linear)}
worst_step = 0.0
for name, weight in matrices.items():
    q, scales = quantize_rows(weight)
    q_package, scales_package = quantize_per_channel(weight)
    assert torch.equal(q, q_package) and torch.equal(scales, scales_package), name
    error = (q.float() * scales[:, None] - weight.detach()).abs()
    worst_step = max(worst_step, float((error / scales[:, None]).max()))
assert worst_step <= 0.5 + 1e-4, worst_step
decoder = sum(w.numel() for w in matrices.values())
rows = sum(w.shape[0] for w in matrices.values())
embedding = model.model.embed_tokens.weight.numel()
print(f"{len(matrices)} decoder matrices, {decoder:,} weights, quantised exactly as minimind.quantize does; "
      f"the worst weight is {worst_step:.4f} of its row's step from its original (the bound is 0.5)")
print(f"bytes: fp32 {4 * (decoder + embedding) / 2**20:.2f} MiB -> int8 {(decoder + 4 * rows + 4 * embedding) / 2**20:.2f} MiB "
      f"(the tied {embedding:,}-weight embedding / LM head stays fp32: {embedding / (decoder + embedding):.0%} of the weights "
      "of a model this small)")

# %% [markdown]
# An int8 linear layer is the same product with the scale applied once per output. Ours
# converts the integers back to floats to multiply (clear, and no faster than fp32); the
# package's `Int8Linear` calls torch's int8 weight kernel (`aten._weight_int8pack_mm`), which
# reads the int8 matrix directly. Both must compute the same function, up to float rounding.

# %%
class RowInt8Linear(torch.nn.Module):
    """y = s ⊙ (x Qᵀ): int8 weights, one scale per output applied after the sum."""

    def __init__(self, linear):
        super().__init__()
        q, s = quantize_rows(linear.weight)
        self.register_buffer("q", q)
        self.register_buffer("s", s)

    def forward(self, x):
        return (x @ self.q.t().to(x.dtype)) * self.s


def int8_from_scratch(model):
    quantised = copy.deepcopy(model)
    for module in list(quantised.model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, child_name, RowInt8Linear(child))
    return quantised


ours_int8 = int8_from_scratch(model)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    package_int8 = quantize_int8(copy.deepcopy(model))
held_out = [item for lang in ("en", "zh") for item in world.questions("sft", "reworded", lang)[:60]]
held_out_prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": item.prompt}]) for item in held_out]
with torch.no_grad():
    batch = torch.tensor([p[:12] for p in held_out_prompts[:32]])
    fp32_logits, scratch_logits, package_logits = (m(batch).logits for m in (model, ours_int8, package_int8))
kernel = next(m.kernel for m in package_int8.modules() if isinstance(m, Int8Linear))
print(f"max |ours - package| over {batch.numel()} positions' logits: {(scratch_logits - package_logits).abs().max():.2e} "
      f"(package kernel: {kernel}; torch's CPU capability here: {torch.backends.cpu.get_cpu_capability()})")
print(f"max |int8 - fp32|: {(package_logits - fp32_logits).abs().max():.3f} on logits of size up to "
      f"{fp32_logits.abs().max():.1f}")
assert (scratch_logits - package_logits).abs().max() < 1e-3
for warning in caught:
    print("minimind.quantize warns:", str(warning.message)[:110], "…")

# %% [markdown]
# What does the rounding cost? Two measures on 120 reworded questions (wordings SFT never saw)
# (English and Chinese), greedy: the share of the first 24 tokens that stay the same (a strict
# measure: after the first difference the two continuations usually part), and exact match of
# the answer, paired question by question.

# %%
agreement = greedy_agreement(model, package_int8, held_out_prompts, 24)
answer_params = SamplingParams(temperature=0.0, max_new_tokens=24)
fp32_right = [is_correct(tokenizer.decode(r), item.answer) for r, item in
              zip(generate_batch(model, held_out_prompts, answer_params), held_out)]
int8_right = [is_correct(tokenizer.decode(r), item.answer) for r, item in
              zip(generate_batch(package_int8, held_out_prompts, answer_params), held_out)]
differences = torch.tensor([float(a) - float(b) for a, b in zip(int8_right, fp32_right)])
change, half_width = differences.mean().item(), 1.96 * differences.std().item() / len(differences) ** 0.5
print(f"greedy tokens equal to fp32's: {agreement:.1%} of {len(held_out_prompts) * 24:,}")
print(f"exact match on reworded questions: fp32 {sum(fp32_right) / len(held_out):.1%}, int8 {sum(int8_right) / len(held_out):.1%}; "
      f"int8 - fp32 = {change:+.1%} [{change - half_width:+.1%}, {change + half_width:+.1%}], "
      f"{int((differences != 0).sum())} of {len(held_out)} answers changed")
expect("inference.int8.greedy_agreement", agreement, n=len(held_out_prompts) * 24)
expect("inference.int8.answers_changed", float((differences != 0).float().mean()), n=len(held_out))
assert abs(change) <= 0.05, "int8 weights should move exact match by a few points at most"


# %% [markdown]
# And the speed? We time 200 greedy tokens with each model, alternating, and then time the
# matrix products of one token on their own, to see how much of a decoding step they are.

# %%
speed_prompt = held_out_prompts[0]
speed = {name: [] for name in ("fp32", "int8 (package)", "int8 (ours)")}
for _ in range(3):
    for name, m in zip(speed, (model, package_int8, ours_int8)):
        speed[name].append(seconds(lambda: generate(m, speed_prompt, max_new_tokens=200, stop_token_ids=()), 1))
rates = {name: 200 / sorted(ts)[1] for name, ts in speed.items()}
for name, rate in rates.items():
    print(f"{name:>15}: {rate:6.0f} tokens/s  ({rate / rates['fp32']:.2f}x fp32)")

# where a token's time goes: the same token's matrix products alone (a 1 × in row times every decoder
# matrix and the LM head), against the whole decoding step
rows_in = [(torch.randn(1, w.shape[1]), w.detach()) for w in [*matrices.values(), model.lm_head.weight]]


def products_of_one_token():
    for x, w in rows_in:
        torch.nn.functional.linear(x, w)


products_s = seconds(lambda: [products_of_one_token() for _ in range(200)]) / 200
step_s = 1 / rates["fp32"]
print(f"one fp32 decoding step: {step_s * 1e3:.2f} ms; its {len(rows_in)} matrix products alone: "
      f"{products_s * 1e3:.2f} ms ({products_s / step_s:.0%})")

# %% [markdown]
# Read together, these say what int8 does and does not do here. It keeps the model's behaviour —
# none of the 120 answers changes in the stored run, and exact match moves by less than the 5 points
# the cell asserts — and it cuts the decoder's bytes by four. It does not make this model faster: a decoding step of a
# model this small spends most of its time calling operators, not multiplying (the products are
# 11% of a step above), so there is little to save per step, and on a CPU without AVX-512
# torch's int8 kernel is slower than its fp32 one (the package warns). On a model whose weights no longer fit in the
# processor's caches, reading a quarter of the bytes is the speed-up; `make bench` measures it
# on the MiniMind2-small shape and against llama.cpp, whose Q8_0 format is the same idea (one
# scale per block of 32 weights instead of per row). LLM.int8() {cite}`dettmers2022llmint8`
# describes what goes wrong at billions of parameters, where a few activation channels are
# large outliers and per-row weight scales are no longer enough.
#
# ## 10.10 Speculative decoding: a small model guesses, the large one checks
#
# A decoding step of the target model costs about the same whether it reads one new token or
# five: the weights are read once either way, and at this size the fixed cost of a forward
# pass (launching dozens of small operators) dominates. **Speculative decoding**
# {cite}`leviathan2023speculative,chen2023accelerating` exploits this. A cheap draft model
# proposes $k$ tokens one by one; the target reads all of them in **one** forward pass over its
# KV cache and gets its own next-token choice after each prefix. Greedily, the proposals are
# kept up to the first one that differs from the target's choice, and that position gets the
# target's token instead — so every round emits at least one token and the output is *exactly*
# the target's greedy output, only computed in fewer target passes.
#
# If each proposal is accepted with probability $\alpha$, independently, a round emits
#
# $$\mathbb{E}[\text{tokens per round}] = 1 + \alpha + \alpha^2 + \dots + \alpha^k = \frac{1 - \alpha^{k+1}}{1 - \alpha},$$
#
# and costs one target pass plus $k$ draft passes. With a draft that costs a fraction $c$ of the
# target, the speed-up is about $\frac{1 - \alpha^{k+1}}{(1 - \alpha)(1 + kc)}$: a draft pays only if it
# is both cheap (small $c$) and agrees with the target often (large $\alpha$). The draft needs
# the target's tokenizer, and every rejected proposal must be forgotten by both KV caches:
# `minimind.speculative.rewind` moves a cache's length back.
#
# First the algorithm from scratch, without caches so that every step is visible, with the
# simplest draft there is — the target's own first block followed by its final norm and head
# ("early exit", {cite}`elhoushi2024layerskip`); it must give the target's greedy tokens and the
# package's counts.

# %%
from minimind.speculative import SpeculativeStats, accept_or_resample, early_exit_draft, speculative_decode
from minimind.tokenizer import EOS_ID as STOP  # <|im_end|>: the end of a reply
reasoner = zoo.load("reasoning")  # chapter 8's model: its replies are worked solutions of 30–60 tokens
problems = world.problems("val")[::12]  # 50 held-out problems, the three kinds in turn
problem_prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": p.prompt}]) for p in problems]
working = SamplingParams(temperature=0.0, max_new_tokens=96)


def speculative_greedy(target, draft, prompt, max_new_tokens, k):
    """Greedy speculative decoding without caches (each forward re-reads the whole sequence:
    quadratic, but every step is visible). Returns (tokens, target forwards, proposals, accepted)."""
    sequence, forwards, proposed, accepted = list(prompt), 0, 0, 0
    with torch.no_grad():
        while len(sequence) - len(prompt) < max_new_tokens:
            room = max_new_tokens - (len(sequence) - len(prompt))
            proposals = []
            while len(proposals) < min(k, room - 1) and STOP not in proposals:
                proposals.append(int(draft(torch.tensor([sequence + proposals])).logits[0, -1].argmax()))
            # one target forward scores every proposal: row i is the target's choice after proposal i - 1
            choices = target(torch.tensor([sequence + proposals])).logits[0, len(sequence) - 1:].argmax(-1).tolist()
            kept = 0
            while kept < len(proposals) and proposals[kept] == choices[kept]:
                kept += 1
            new = proposals[:kept] + [choices[kept]]  # the first disagreement is replaced by the target's token
            forwards, proposed, accepted = forwards + 1, proposed + len(proposals), accepted + kept
            if STOP in new:
                sequence += new[:new.index(STOP) + 1]
                break
            sequence += new
    return sequence[len(prompt):], forwards, proposed, accepted


exit_draft = early_exit_draft(reasoner, 1)  # the reasoning model's own first block, final norm and head
for problem, prompt in list(zip(problems, problem_prompts))[:3]:
    plain = generate(reasoner, prompt, working)
    ours, forwards, proposed, accepted = speculative_greedy(reasoner, exit_draft, prompt, 96, k=3)
    stats = SpeculativeStats()
    package = [t for (t,) in speculative_decode(reasoner, exit_draft, prompt, working, 3, stats)]
    assert [t for t in ours if t != STOP] == plain and package == ours
    print(f"{problem.prompt}\n  {len(ours)} tokens in {forwards} target forwards ({accepted} of {proposed} proposals "
          f"kept; the package: {stats.rounds} forwards, {stats.accepted} of {stats.drafted}) — {tokenizer.decode(plain)!r}")

# %% [markdown]
# The output is the target's, token for token, and so is the package's. But the first block alone
# is a poor guesser: the reasoning model was never trained to predict from its first block, so
# most proposals are thrown away. A draft can be *trained* to agree with its target: chapter 9's
# distillation with the target as the teacher. `reasoning_draft` in the zoo is that — a two-block
# model that started as the reasoning model's first two blocks (with its embedding and head) and
# was then trained on the reasoning data with the KL term alone (α = 0, T = 1), so that its
# next-token distribution matches the target's. We compare three drafts (the first block, the first
# two blocks, the distilled two blocks) for k = 1…3 on 50 held-out problems, and measure each
# draft's cost per token $c$ against the target's.

# %%
drafts = {"first block": exit_draft, "first two blocks": early_exit_draft(reasoner, 2),
          "distilled two blocks": zoo.load("reasoning_draft")}
reference = [generate(reasoner, p, working) for p in problem_prompts]
reply_tokens = sum(map(len, reference))


def seconds_per_token(m):
    # 48 tokens from each of 5 prompts, no stop: every model decodes the same number of tokens
    fixed = SamplingParams(temperature=0.0, max_new_tokens=48, stop_token_ids=())
    return seconds(lambda: [generate(m, p, fixed) for p in problem_prompts[:5]], 1) / (5 * 48)


def target_alone():
    return seconds(lambda: [generate(reasoner, p, working) for p in problem_prompts], 1)


# a shared machine's speed drifts: every model is timed in turn, three times, and the medians kept
per_token = {name: [] for name in ("target", *drafts)}
for _ in range(3):
    for name, m in (("target", reasoner), *drafts.items()):
        per_token[name].append(seconds_per_token(m))
cost = {name: sorted(ts)[1] / sorted(per_token["target"])[1] for name, ts in per_token.items()}
target_runs = [target_alone()]  # timed again halfway through and at the end
rows, acceptance = [], {}
for name, draft in drafts.items():
    for k in (1, 2, 3):
        stats = SpeculativeStats()
        start = time.perf_counter()
        replies = [[t for (t,) in speculative_decode(reasoner, draft, p, working, k, stats) if t != STOP]
                   for p in problem_prompts]
        spent = time.perf_counter() - start
        assert replies == reference, f"{name}, k={k}: the output must be the target's greedy output"
        alpha = stats.acceptance_rate
        acceptance[name, k] = (alpha, stats.drafted)
        rows.append([name, cost[name], k, alpha, stats.tokens_per_target_forward,
                     (1 - alpha ** (k + 1)) / (1 - alpha) if alpha < 1 else k + 1, spent])
    if len(target_runs) < 3:
        target_runs.append(target_alone())
target_s = sorted(target_runs)[1]
for row in rows:
    row[-1] = target_s / row[-1]  # seconds -> speed-up over the target alone
print(f"target alone: {reply_tokens / target_s:.0f} tokens/s over {len(problem_prompts)} problems "
      f"({reply_tokens / len(problem_prompts):.0f} tokens per reply); every reply below is the target's own")
print(f"{'draft':>20} {'cost c':>6} {'k':>2} {'accepted':>9} {'tokens/forward':>15} {'(1-a^(k+1))/(1-a)':>18} {'speed-up':>9}")
for name, c, k, alpha, per_forward, predicted, speedup in rows:
    print(f"{name:>20} {c:6.2f} {k:2d} {alpha:9.1%} {per_forward:15.2f} {predicted:18.2f} {speedup:8.2f}x")
for name in drafts:
    alpha, drafted = acceptance[name, 2]
    expect(f"inference.speculative.acceptance.{name.replace(' ', '_')}.k2", alpha, n=drafted)
assert acceptance["distilled two blocks", 2][0] > acceptance["first block", 2][0] + 0.15, \
    "distillation should make the one-block draft agree with its target far more often"

# %% [markdown]
# The table is the cost model at work. The target's own blocks cost nothing to build but guess
# poorly — a quarter to a third of their proposals are kept at k = 1 (24.2% and 34.7% in the stored
# run) — so each round pays for draft passes that bring almost nothing, and decoding is slower
# than the target alone. Distillation changes the guesser, not its size: the same two blocks,
# trained to match the target, are kept 80.1% of the time at k = 1 and give 3.00 tokens per target
# forward at k = 3. Yet the wall clock shows no gain (0.93× for it at best in the stored run; rerun the cell and the
# speed-ups move by tens of percent on a shared machine, while the acceptance counts do not move at
# all), because the draft is not cheap: two blocks of a four-block model cost about half of it
# ($c$ = 0.48 in the stored run) per token — on a model this small a forward pass costs roughly its number of blocks in operator
# calls, whatever their width — and each round adds the verification of $k + 1$ tokens and the
# bookkeeping of two caches, which the formula leaves out. Speculative decoding is made for the
# opposite case: a target whose every forward reads gigabytes of weights, and a draft tens of
# times smaller that agrees with it on most tokens. In this run the measured tokens per forward
# also lie above the formula at k ≥ 2: acceptances come in runs (a draft that knows the working's
# template gets whole stretches of it right and misses a digit), which the formula's
# independent-acceptance assumption leaves out.
#
# With sampling, keeping a proposal only when it equals the target's choice would change the
# distribution. The rule that keeps it exactly {cite}`leviathan2023speculative`: a proposal $x$
# drawn from the draft's $q$ is kept with probability $\min(1, p(x)/q(x))$; if it is rejected, the
# replacement is drawn from the normalised residual $\max(0, p - q)$. Then
# $P(\text{emit } x) = q(x)\min\!\left(1, \tfrac{p(x)}{q(x)}\right) + \left(1 - \sum_y \min(p(y), q(y))\right)\frac{\max(0, p(x) - q(x))}{\sum_y \max(0, p(y) - q(y))} = \min(p(x), q(x)) + \max(0, p(x) - q(x)) = p(x),$
# because the chance of a rejection and the residual's mass are the same number,
# $1 - \sum_y \min(p, q) = \sum_y \max(0, p - q)$. We check it by drawing: on a six-token
# vocabulary, 20,000 first tokens from our rule and from the package's `accept_or_resample`.

# %%
def accept_or_resample_once(p, q, generator):
    """One proposal x ~ q, kept with probability min(1, p(x)/q(x)), else a draw of norm(max(0, p - q))."""
    x = int(torch.multinomial(q, 1, generator=generator))
    if float(torch.rand((), generator=generator)) < min(1.0, float(p[x] / q[x])):
        return x
    residual = (p - q).clamp(min=0)
    return int(torch.multinomial(residual / residual.sum(), 1, generator=generator))


g = torch.Generator().manual_seed(0)
p = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.07, 0.03])   # the target
q = torch.tensor([0.10, 0.10, 0.30, 0.30, 0.10, 0.10])   # a poor draft
draws = 20_000
ours = torch.bincount(torch.tensor([accept_or_resample_once(p, q, g) for _ in range(draws)]), minlength=6) / draws
package = torch.zeros(6)
for _ in range(draws):
    x = int(torch.multinomial(q, 1, generator=g))
    kept, following = accept_or_resample(torch.stack([p, p]), q[None], [x], g)
    package[x if kept else following] += 1 / draws
for name, freq in (("the draft's q", q), ("our rule", ours), ("the package", package)):
    print(f"{name:>14}: {[round(v, 3) for v in freq.tolist()]}   total variation from p: {0.5 * (freq - p).abs().sum():.4f}")
assert 0.5 * (ours - p).abs().sum() < 0.02 and 0.5 * (package - p).abs().sum() < 0.02

# %% [markdown]
# Both options are flags of the chat, server and web commands; the draft is any model of the same
# tokenizer, e.g. the zoo's:
#
# ```bash
# python -m minimind.chat --model sft --quantize int8                                 # weight-only int8
# python -m minimind.chat --model reasoning --draft reasoning_draft --draft_tokens 3   # speculative decoding
# python -m minimind.serve --model reasoning --draft reasoning_draft                  # the same behind the API
# ```
#
# `make bench` measures both on the MiniMind2-small shape against transformers' `generate` and,
# when `llama-cpp-python` is installed (`pip install -e '.[llama]'`, which compiles llama.cpp),
# against llama.cpp running this chapter's own f16 and Q8_0 GGUF exports; `benchmarks/README.md`
# records a run.
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
# ```{exercise} How many tokens should the draft propose?
# :label: ex-10-draft-tokens
# With acceptance $\alpha$ and a draft that costs $c$ of the target per token, section 10.10 gives
# the speed-up $\frac{1 - \alpha^{k+1}}{(1 - \alpha)(1 + kc)}$ (verifying $k + 1$ tokens counted as one
# target forward). Take $\alpha$ and $c$ of the distilled draft from the table of 10.10, predict the
# speed-up for $k = 1 \dots 8$, and say which $k$ the formula picks. Does the measured table pick the
# same $k$? Why does a larger $k$ eventually lose even though tokens per forward keep rising?
# ```
#
# ```{solution} ex-10-draft-tokens
# :class: dropdown
# The cell below evaluates the formula with the distilled draft's measured $\alpha$ (at $k = 2$)
# and $c$. Each extra proposal costs $c$ for certain but is emitted only if all the proposals before
# it were kept, which happens with probability $\alpha^k$: once $\alpha^k < c$ roughly, proposing
# more costs more than it brings. Acceptance also falls with $k$ in the table (later positions are
# harder to guess), which moves the best $k$ lower still.
# ```

# %%
distilled = [(k, alpha, c, speedup) for name, c, k, alpha, _, _, speedup in rows if name == "distilled two blocks"]
alpha_2, c_draft = next((alpha, c) for k, alpha, c, _ in distilled if k == 2)
predicted = {k: (1 - alpha_2 ** (k + 1)) / ((1 - alpha_2) * (1 + k * c_draft)) for k in range(1, 9)}
print("predicted speed-up with alpha = {:.2f}, c = {:.2f}:".format(alpha_2, c_draft),
      ", ".join(f"k={k}: {v:.2f}x" for k, v in predicted.items()))
print("measured:", ", ".join(f"k={k}: {speedup:.2f}x" for k, _, _, speedup in distilled))
print(f"the formula picks k = {max(predicted, key=predicted.get)}; the measurement picks "
      f"k = {max(distilled, key=lambda row: row[3])[0]}")

# %% [markdown]
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
# - Weight-only int8 (one scale per row) moves each weight by at most half a step, keeps the
#   answers, and quarters the decoder's bytes; at this size it does not decode faster, because a
#   step is mostly the fixed cost of calling operators, not the products (10.9).
# - Speculative decoding leaves the output exactly the target's (greedy: by construction; sampling:
#   by the accept/resample rule, checked by drawing). It pays only when the draft is both cheap
#   and agrees with the target; a draft distilled from the target is accepted far more often than
#   the target's own first blocks, but on the book's four-block model no draft is cheap enough for
#   a wall-clock gain (10.10).
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
# - Leviathan et al., *Fast Inference from Transformers via Speculative Decoding*, and Chen et al.,
#   *Accelerating Large Language Model Decoding with Speculative Sampling* — the algorithm and its
#   sampling rule {cite}`leviathan2023speculative,chen2023accelerating`.
# - Elhoushi et al., *LayerSkip* — early-exit drafts from the target's own first layers, trained for
#   it {cite}`elhoushi2024layerskip`.
# - Dettmers et al., *LLM.int8()* — int8 inference at scale and its outlier features
#   {cite}`dettmers2022llmint8`.
# - MiniMind, the project this book re-creates {cite}`gong2024minimind`.
