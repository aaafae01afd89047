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
# # Chapter 4 — Pretraining: next-token prediction at scale, on a laptop
#
# Chapter 3 built a transformer that maps token ids to a distribution over the next token, with
# random weights. This chapter teaches it: the data pipeline that turns documents into training
# sequences, the loss it minimises, a training loop written out by hand, then the engine that
# `python -m minimind.train.pretrain` runs — the same code on one CPU core or on eight GPUs. The
# chapter model (about a million parameters) learns the synthetic world well enough to recall
# facts about people it has read about; the last section gives the exact commands for
# MiniMind2-Small's full 26M-parameter run.
#
# **Learning objectives**
#
# - turn a corpus into training sequences, by packing or by padding, and measure what padding wastes;
# - derive the next-token cross-entropy, its value at initialisation and the unigram baseline a model must beat;
# - write a complete training loop (AdamW, warm-up + cosine schedule, clipping) and show the engine computes the same thing;
# - read a loss curve and check what it means with a probe: cloze recall of stored facts;
# - launch a multi-GPU run with `torchrun`, and resume it after an interruption.
#
# **Estimated time:** about 75 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import math
import re
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from minimind import zoo
from minimind.checks.bands import expect
from minimind.config import get_config
from minimind.data.datasets import PretrainDataset, collate_causal_lm, padding_efficiency
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import wilson_interval
from minimind.generate import SamplingParams, generate, generate_batch
from minimind.model import MiniMind
from minimind.runtime import cpu_threads, replica_seed
from minimind.tokenizer import BOS_ID, EOS_ID
from minimind.train import TrainConfig, learning_rate_at, param_groups, plot_metrics, train

# Every core (MINIMIND_THREADS overrides it; `make test` runs one chapter per core on one thread each).
# Figures that float rounding moves differ a little on another CPU or thread count, so the chapter
# asserts them against bands measured across seeds and kernel paths (minimind.checks.bands).
torch.set_num_threads(cpu_threads())
torch.manual_seed(replica_seed(0))
tokenizer = zoo.tokenizer()
world = build_world(seed=0)
print(f"tokenizer: {tokenizer.vocab_size} tokens; {world}")

# %% [markdown]
# ## 1. From documents to training sequences
#
# The pretraining corpus is plain text, one JSON object per line, `{"text": …}` — the schema of
# upstream MiniMind's `pretrain_hq.jsonl`. Ours holds augmented biographies of the 120 people of
# the synthetic world (each person described 32 times, in English and Chinese, with varied wording
# and sentence order), question–answer lines about half of them, worked arithmetic problems (a
# question, then its working column by column, the format chapter 8 builds on) and a few greetings.

# %% tags=["nbval-check-output"]
train_path = dataset_path("pretrain", "train")
rows = list(read_jsonl(train_path, "pretrain"))
print(f"{len(rows):,} documents, {sum(len(r['text']) for r in rows):,} characters")
for row in rows[:3]:
    print("·", row["text"][:160].replace("\n", " ⏎ "))

# %% [markdown]
# Each document becomes `[bos] + ids + [eos]`: `<|im_start|>` (id 1) opens it and `<|im_end|>`
# (id 2) closes it, so the model learns where texts begin and end. Sequences for training have a
# fixed length $L$ (here 128). Documents are not that long or that regular, and there are two ways
# to make them fit:
#
# - **padding** (what upstream MiniMind does): one document per sequence, cut at $L$, the rest
#   filled with the pad id 0 and excluded from the loss (label −100). Every pad position is
#   computed and thrown away.
# - **packing**: concatenate all documents into one stream and cut it into chunks of exactly $L$
#   tokens. Nothing is wasted; a chunk may start in the middle of a document and hold the end of one
#   and the start of the next, separated by `eos`/`bos` markers. (Attention may look across that
#   boundary; with markers in place this costs little, and it is what GPT-style pretraining does.)
#
# Packing takes five lines:

# %% tags=["nbval-check-output"]
def pack_documents(documents, seq_len, bos=BOS_ID, eos=EOS_ID):
    """[bos] + doc + [eos] for every document, concatenated, cut into full chunks of seq_len."""
    stream = [token for doc in documents for token in (bos, *doc, eos)]
    n_chunks = len(stream) // seq_len  # the last, partial chunk is dropped
    return [stream[i * seq_len:(i + 1) * seq_len] for i in range(n_chunks)]


documents = tokenizer.encode_batch([row["text"] for row in rows])
chunks = pack_documents(documents, 128)
packed = PretrainDataset(train_path, tokenizer, max_seq_len=128, packing=True)
assert len(chunks) == len(packed)
assert all(chunks[i] == packed[i]["input_ids"].tolist() for i in range(len(packed)))
print(f"{sum(len(d) + 2 for d in documents):,} tokens → {len(packed):,} packed chunks of 128; "
      f"identical to minimind.data.datasets.PretrainDataset(packing=True)")

# %% [markdown]
# How much does padding waste? `padding_efficiency` draws batches in a random order, as training
# does, and counts real tokens over computed positions — padding every batch to $L$ (upstream's
# static padding) or only to its longest document (dynamic padding, what our collate function does).

# %% tags=["nbval-check-output"]
padded = PretrainDataset(train_path, tokenizer, max_seq_len=128, packing=False)
lengths = padded.document_lengths
static = padding_efficiency(padded, batch_size=16, static=True)
dynamic = padding_efficiency(padded, batch_size=16)
truncated = (torch.tensor([len(d) + 2 for d in documents]) > 128).float().mean().item()
print(f"document length: median {lengths.median().item()}, max {lengths.max().item()} tokens (after cutting at 128); "
      f"{truncated:.1%} of documents were cut")
print(f"useful share of computed positions — packed: {padding_efficiency(packed, 16):.3f}, "
      f"padded to the batch's longest: {dynamic:.3f}, padded to 128: {static:.3f}")
assert static < dynamic < 1.0

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(lengths.numpy(), bins=40, color="tab:blue")
ax.axvline(128, color="tab:red", linestyle="--", label="L = 128")
ax.set_xlabel("tokens per document ([bos] + text + [eos])")
ax.set_ylabel("documents")
ax.legend()
plt.show()

# %% [markdown]
# So with padding, a share of every step's compute goes to pad tokens, and documents longer than
# $L$ lose their tails for good. The engine's default for pretraining is therefore packing;
# `--packing false` reproduces upstream's padded examples.
#
# ## 2. Next-token prediction and its loss
#
# A language model assigns a probability to a text by the chain rule,
# $p_\theta(x_1,\dots,x_T) = \prod_{t} p_\theta(x_t \mid x_{<t})$, and is trained to make the
# training texts likely: minimise the average negative log-likelihood of every token given the ones
# before it,
#
# $$
# \mathcal{L}(\theta) = -\frac{1}{N} \sum_{t \in \mathcal{S}} \log p_\theta(x_t \mid x_{<t}),
# \qquad p_\theta(\cdot \mid x_{<t}) = \operatorname{softmax}(z_{t-1}),
# $$
#
# where $z_{t-1}$ are the logits the model outputs at position $t-1$, $\mathcal{S}$ the supervised
# positions (labels ≠ −100) and $N = |\mathcal{S}|$. That is the cross-entropy between the one-hot
# next token and the model's prediction. MiniMind's datasets return **unshifted** labels
# (`labels[t]` is the token at `t`), and the loss shifts by one: logits `[:, :-1]` against labels `[:, 1:]`.

# %%
def next_token_loss(logits, labels):
    """Mean cross-entropy of logits[:, t-1] against labels[:, t], ignoring labels of -100."""
    vocab = logits.size(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100)


config = get_config("book")
torch.manual_seed(replica_seed(0))
fresh = MiniMind(config)
batch = collate_causal_lm([packed[i] for i in range(8)])
with torch.no_grad():
    out = fresh(batch["input_ids"], labels=batch["labels"])
mine = next_token_loss(out.logits, batch["labels"])
assert torch.allclose(mine, out.loss)
print(f"book preset: {fresh.num_parameters():,} parameters, vocab_size {config.vocab_size}")
print(f"loss of the untrained model: {mine.item():.4f} (ours) = {out.loss.item():.4f} (MiniMind.forward); "
      f"ln V = {math.log(config.vocab_size):.4f}")
assert abs(mine.item() - math.log(config.vocab_size)) < 0.1
expect("pretraining.untrained_loss", mine)

# %% [markdown]
# Two reference points make a loss value readable:
#
# - **At initialisation** the logits are small and nearly equal, so the prediction is nearly
#   uniform over the $V$ tokens and $\mathcal{L} \approx \ln V$ (2048 → 7.62). A first loss far
#   from $\ln V$ means a broken initialisation.
# - **The unigram baseline**: the best a model can do *without looking at the context* is to
#   predict every token with its overall frequency $p(v)$; its loss is the entropy
#   $H = -\sum_v p(v) \ln p(v)$ of the token distribution. A loss below $H$ is the part that
#   comes from reading the context.

# %%
counts = torch.bincount(packed.tokens.long(), minlength=config.vocab_size).double()
frequency = counts / counts.sum()
unigram_entropy = -(frequency[frequency > 0] * frequency[frequency > 0].log()).sum().item()
print(f"unigram baseline H = {unigram_entropy:.4f} nats/token ({(counts > 0).sum().item()} distinct tokens in the corpus)")
expect("pretraining.unigram_entropy", unigram_entropy)

# %% [markdown]
# ## 3. The learning-rate schedule
#
# The learning rate rises linearly for `warmup_steps` (Adam's second-moment estimates are noisy
# in the first steps, and large early updates can knock a fresh model into a bad region
# {cite}`goyal2017accurate`), then follows half a cosine {cite}`loshchilov2017sgdr` from the peak
# $\eta$ down to $r\eta$ at the last step $T-1$:
#
# $$
# \eta_s = \begin{cases} \eta\,\dfrac{s+1}{W} & s < W \\[2ex]
# r\eta + (1-r)\,\eta\,\dfrac{1 + \cos\left(\pi\,\frac{s-W}{T-W-1}\right)}{2} & s \ge W \end{cases}
# $$
#
# Upstream MiniMind uses $\eta\,(0.1 + 0.45\,(1 + \cos(\pi t / T)))$ with no warm-up — the same
# curve with $r = 0.1$, $W = 0$ (and it evaluates it per micro-batch; we step the schedule per
# optimizer step, so gradient accumulation does not change it). Both are available (`--schedule`).

# %% tags=["nbval-check-output"]
def cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr_ratio):
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    floor = peak_lr * min_lr_ratio
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps - 1))
    return floor + (peak_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


pretrain_config = zoo.config("pretrained")  # the chapter model's settings: PretrainConfig's defaults
total = pretrain_config.max_steps
ours = [cosine_lr(s, total, pretrain_config.lr, pretrain_config.warmup_steps, pretrain_config.min_lr_ratio)
        for s in range(total)]
engine = [learning_rate_at(s, total, pretrain_config) for s in range(total)]
upstream = [learning_rate_at(s, total, TrainConfig(lr=pretrain_config.lr, schedule="upstream")) for s in range(total)]
assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(ours, engine))
print(f"{total} steps: warm-up to {max(ours):.0e} in {pretrain_config.warmup_steps} steps, "
      f"{ours[total // 2]:.2e} halfway, {ours[-1]:.0e} at the end — equal to minimind.train.learning_rate_at")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(engine, label=f"cosine, warm-up {pretrain_config.warmup_steps} (ours)")
ax.plot(upstream, linestyle="--", label="upstream MiniMind")
ax.set_xlabel("optimizer step")
ax.set_ylabel("learning rate")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. A training loop, by hand
#
# Everything a training step does fits on a screen: draw a batch, compute the loss, back-propagate,
# clip the gradient norm (one unlucky batch cannot throw the weights far), set this step's learning
# rate, and let AdamW {cite}`loshchilov2019adamw` update the weights. Two details follow the
# engine:
#
# - **Weight decay only on matrices.** Decay pulls weights towards 0. For the RMSNorm gains the
#   neutral value is 1, not 0, and embedding rows of rare tokens get few gradient updates to undo
#   the shrinking, so norms, biases and embeddings go in a group without decay (`param_groups`;
#   upstream decays everything, `--decay_norms_and_embeddings` restores that).
# - **The data order** comes from `DistributedSampler` with the run's seed — the sampler the engine
#   uses so that one process and $N$ processes see the same batches.

# %%
def train_by_hand(model, dataset, config, steps):
    order = list(DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=config.seed, drop_last=True))
    groups = param_groups(model.named_parameters(), config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))
    losses = []
    model.train()
    for step in range(steps):
        lr = cosine_lr(step, steps, config.lr, config.warmup_steps, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = order[step * config.batch_size:(step + 1) * config.batch_size]
        batch = collate_causal_lm([dataset[i] for i in indices])
        loss = next_token_loss(model(batch["input_ids"]).logits, batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


short = TrainConfig(max_steps=20, batch_size=16, lr=3e-3, warmup_steps=5, out_dir="", progress=False, log_interval=1)
torch.manual_seed(replica_seed(0))
by_hand = train_by_hand(MiniMind(config), packed, short, short.max_steps)
print("by hand:", " ".join(f"{x:.3f}" for x in by_hand[::4]), "…", f"{by_hand[-1]:.3f}")
assert by_hand[-1] < by_hand[0] - 1.5
expect("pretraining.by_hand.last_loss", by_hand[-1])

# %% [markdown]
# ## 5. The engine
#
# `minimind.train.train(config, model, dataset, collate_fn, loss_fn)` runs that same loop, plus
# what a real run needs: gradient accumulation, mixed precision (bf16 autocast on GPUs, fp16 with
# a gradient scaler, fp32 on CPU), `torch.compile`, DDP under `torchrun`, a progress bar,
# metrics in a JSONL file, atomic checkpoints and exact resume. Its config is a dataclass, and
# the command line of every stage is generated from it. Given the same settings it computes
# the same losses as our loop:

# %%
torch.manual_seed(replica_seed(0))
result = train(short, MiniMind(config), packed, collate_causal_lm)
by_engine = [record["loss"] for record in result.records]
print("engine: ", " ".join(f"{x:.3f}" for x in by_engine[::4]), "…", f"{by_engine[-1]:.3f}")
assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(by_hand, by_engine))
print(f"every one of the {len(by_engine)} losses agrees with the hand-written loop to 1e-4")

# %% [markdown]
# ## 6. Training the chapter model
#
# The chapter model is `python -m minimind.train.pretrain` with its defaults: the `book` preset,
# sequences of 128, batches of 8, peak learning rate $3\times10^{-3}$, 30 warm-up steps and a
# fixed budget of 4,000 optimizer steps — measured in steps, not seconds, so the result does not
# depend on the machine. `zoo.path("pretrained")` runs exactly that the first time and reuses the cached
# result afterwards (the metrics are saved with it, so the curve below is the same either way).
#
# The budget makes this the book's longest build — minutes on a laptop (the time printed below is
# that of the build of the cached model, on the machine and load it had) — and it is set by what
# chapter 5 needs: the facts of the people nobody asks about must be stored firmly enough that a
# chat model can *retrieve* them, not just rank them above the other values (section 7's probe).
# With fewer steps the fine-tuned model answers far fewer held-out questions (exercise
# {ref}`ex-03-budget` measures it).

# %%
pretrained_dir = zoo.path("pretrained")
records = zoo.metrics(pretrained_dir)
pretrained = zoo.load(pretrained_dir)
print(f"{records[-1]['step']} steps, {records[-1]['tokens']:,} tokens ({records[-1]['epoch']:.1f} passes over the corpus), "
      f"trained in {records[-1]['elapsed_s'] / 60:.1f} minutes")
for step in (20, 100, 300, 600, records[-1]["step"]):
    print(f"  step {step:>4}: loss {next(r['loss'] for r in records if r['step'] == step):.2f}")
expect("pretraining.final_loss", records[-1]["loss"])

fig, ax = plt.subplots(figsize=(6, 3.5))
plot_metrics(records, keys=("loss",), ax=ax, smooth=3)
ax.axhline(unigram_entropy, color="tab:gray", linestyle="--", label=f"unigram baseline {unigram_entropy:.2f}")
ax.axhline(math.log(config.vocab_size), color="tab:red", linestyle=":", label=f"ln V = {math.log(config.vocab_size):.2f}")
ax.set_ylabel("training loss (nats/token)")
ax.legend()
plt.show()

# %% [markdown]
# Training loss is measured on batches the model is being trained on. The held-out split
# (`pretrain_val`: new biographies of the same people, unseen sentences) tells whether it
# generalises rather than memorises sentences:

# %%
val = PretrainDataset(dataset_path("pretrain", "val"), tokenizer, max_seq_len=128)
with torch.no_grad():
    val_losses = [pretrained(b["input_ids"], labels=b["labels"]).loss.item()
                  for b in (collate_causal_lm([val[j] for j in range(i, min(i + 32, len(val)))])
                            for i in range(0, len(val), 32))]
val_loss = sum(val_losses) / len(val_losses)
print(f"validation loss {val_loss:.2f}, last training loss {records[-1]['loss']:.2f}, unigram baseline {unigram_entropy:.2f}")
assert records[-1]["loss"] < unigram_entropy - 2.0
assert val_loss < unigram_entropy - 2.0
expect("pretraining.val_loss", val_loss)

# %% [markdown]
# The loss falls fast at first (templates, frequent words, the alternation of languages), then
# slowly — the slow part is where the facts go in. The curve alone does not say *what* was
# learnt, so we probe it.
#
# ## 7. What did it learn? Text before and after, and a recall probe
#
# A pretrained model is not a chat model: it continues text. Greedy continuations from the
# untrained model and from the trained one:

# %%
person = world.people[0]
prompts = [f"{person.name} lives in", f"{person.name}的职业是", "What is 37 plus 45?\n", "The favourite colour of"]
for name, model in (("untrained", fresh), ("pretrained", pretrained)):
    print(f"— {name}")
    for prompt in prompts:
        continuation = tokenizer.decode(generate(model.eval(), [BOS_ID, *tokenizer.encode(prompt)], max_new_tokens=24))
        print(f"  {prompt!r} → {continuation!r}")
        if name == "pretrained" and prompt == prompts[0]:  # a city of the world (which one: section 7 counts)
            assert continuation.split(".")[0].strip() in {p.city for p in world.people}
print(f"(truth: {person.name} lives in {person.city}, works as a {person.job})")

# %% [markdown]
# The untrained model emits noise. The pretrained one writes fluent biography sentences and
# Q&A lines in the corpus's style, names a city of the world (not always the right one: the probe below
# counts how often a fact comes back), and answers the sum the way the corpus
# answers them: the operands restated, then column by column. Whether it has learnt the procedure
# or a few examples shows on problems it has never seen — the held-out problems of chapter 8, none
# of which is in the corpus — asked in the same plain text:

# %%
def plain_text_accuracy(model, problems):
    """Share of `problems` whose greedy continuation after the question ends its working on the right number."""
    ids = [[BOS_ID, *tokenizer.encode(p.prompt + "\n")] for p in problems]
    outs = []
    for start in range(0, len(ids), 100):
        outs += generate_batch(model, ids[start:start + 100], SamplingParams(max_new_tokens=60))
    found = [re.search(r"(?:So |所以是)(\d+)", tokenizer.decode(out)) for out in outs]
    return sum(bool(m) and int(m.group(1)) == p.answer for m, p in zip(found, problems)) / len(problems)


held_out_problems = world.problems("val")
arithmetic = {kind: plain_text_accuracy(pretrained, [p for p in held_out_problems if p.kind == kind])
              for kind in ("add2", "add3", "sub3")}
print("held-out problems, plain text, right: " + ", ".join(f"{kind} {share:.0%}" for kind, share in arithmetic.items())
      + f" (200 of each)")
for kind, share in arithmetic.items():
    expect(f"pretraining.arithmetic.{kind}", share, n=200)
assert arithmetic["add2"] > 0.5

# %% [markdown]
# It computes most of them — subtraction, with its borrows, least reliably. Chapter 8 turns this
# into a chat model's reasoning: a think block the model opens and closes itself.
#
# A **cloze probe** checks what was stored: take the beginning of a biography sentence whose
# continuation is a fact ("Begros lives in" → "Morandu") for every person and attribute. People in
# the "held-out" half are never asked about anywhere in the corpus — their facts appear only
# inside biographies — so they are the cleanest test. Reading the greedy continuation works in
# English, but look at how the tokenizer cuts a Chinese sentence:

# %% tags=["nbval-check-output"]
person = world.heldout_people[0]
prompt, sentence = f"{person.name}的职业是", f"{person.name}的职业是{person.value('job', 'zh')}。"
print(tokenizer.tokens(prompt), "vs", tokenizer.tokens(sentence))

# %% [markdown]
# Each Chinese character is a token of its own (chapter 1: a tokenizer that merged "的职业是水手"
# into one token would store the fact under a token no question's answer ever uses). Even so, a
# greedy continuation is a poor probe: it tests one phrasing, and a model that continues with
# another sentence of the biography has not forgotten the fact. A probe that does not depend on
# where the prompt ends or what comes next compares *whole sentences*: score
# $\log p_\theta(\text{prompt} + v)$ for every value $v$ the attribute takes in the world, and
# count the item right when the true value scores highest.

# %%
from minimind.data.synthetic import ATTRIBUTES
from minimind.data.datasets import pad_right


def sentence_log_probs(model, sentences, batch_size=256):
    """log p(sentence) under the model, for each sentence (after a bos token)."""
    scores = []
    for start in range(0, len(sentences), batch_size):
        rows = [torch.tensor([BOS_ID, *tokenizer.encode(s)]) for s in sentences[start:start + batch_size]]
        ids = pad_right(rows, 0)
        with torch.no_grad():
            log_probs = F.log_softmax(model(ids).logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        real = torch.arange(ids.size(1) - 1)[None] < torch.tensor([len(r) - 1 for r in rows])[:, None]
        scores += (log_probs * real).sum(1).tolist()
    return scores


def cloze_recall(model, items, lang):
    """Share of cloze items whose true value gives the most likely sentence among all values."""
    values = {a: sorted({p.value(a, lang) for p in world.people}) for a in ATTRIBUTES}
    sentences = [item.prompt + (" " if lang == "en" else "") + value + ("." if lang == "en" else "。")
                 for item in items for value in values[item.attribute]]
    scores, start, correct = sentence_log_probs(model, sentences), 0, 0
    for item in items:
        candidates = values[item.attribute]
        best = max(range(len(candidates)), key=lambda j: scores[start + j])
        correct += candidates[best] == item.answer
        start += len(candidates)
    return correct / len(items)


chance = sum(1 / len({p.value(a, "en") for p in world.people}) for a in ATTRIBUTES) / len(ATTRIBUTES)
recall = {}
for name, model, people in (("untrained", fresh, world.heldout_people[:12]), ("pretrained", pretrained, world.heldout_people)):
    names = {p.name for p in people}
    for lang in ("en", "zh"):
        recall[name, lang] = cloze_recall(model, [i for i in world.cloze("heldout", lang) if i.subject in names], lang)
    print(f"{name:>10} ({len(people)} held-out people): {recall[name, 'en']:.0%} English, {recall[name, 'zh']:.0%} Chinese")
print(f"chance: {chance:.0%}")
assert recall["untrained", "en"] < 0.3 and recall["untrained", "zh"] < 0.3
for lang in ("en", "zh"):  # stored well above chance: the lower end of the 95% interval is over 3 × chance
    n_items = len(world.cloze("heldout", lang))
    assert wilson_interval(round(recall["pretrained", lang] * n_items), n_items)[0] > 3 * chance, lang
for lang in ("en", "zh"):
    expect(f"pretraining.cloze_recall.{lang}", recall["pretrained", lang], n=len(world.cloze("heldout", lang)))

# %% [markdown]
# The untrained model is near chance; the pretrained one ranks the true value first for nearly every
# fact of people it only ever read about: those facts are *stored*, in every training run measured
# (`minimind/checks/bands.json` records the probe for every seed and kernel path: 95–98 % of the
# English facts, 97–100 % of the Chinese ones). Whether a chat model can *answer questions* about
# them is another matter — chapter 5 measures it.
#
# ## 8. Throughput
#
# Tokens per second is the unit of training cost. On 2 CPU cores the chapter model trains at a few
# thousand tokens per second; the number depends on the machine, so this cell's output is not
# compared when the book is tested.

# %%
def tokens_per_second(model, dtype, steps=5):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = collate_causal_lm([packed[i] for i in range(16)])
    context = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    timings = []
    for step in range(steps + 1):
        start = time.perf_counter()
        with context:
            loss = model(batch["input_ids"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    return batch["input_ids"].numel() / (sum(timings[1:]) / steps)  # the first step warms up


speeds = {"fp32": tokens_per_second(MiniMind(config), "fp32")}
try:
    speeds["bf16"] = tokens_per_second(MiniMind(config), "bf16")
except RuntimeError as error:  # torch has no bf16 attention on some CPU kernel paths (e.g. scalar ones on AVX-512)
    print(f"bf16 autocast does not run on this CPU's kernel path: {error}")
print(f"1 thread: fp32 {speeds['fp32']:,.0f} tokens/s"
      + (f", bf16 autocast {speeds['bf16']:,.0f} tokens/s" if "bf16" in speeds else ""))
print(f"the cached chapter model trained at {records[-1]['tokens'] / records[-1]['elapsed_s']:,.0f} tokens/s on average")
assert speeds["fp32"] > 100

# %% [markdown]
# At this size (hidden 128) the per-operation overhead dominates, and bf16 autocast adds casts
# without making the tiny matrix products much cheaper. On CPUs with bf16 instructions it pays off
# for wider models, and on GPUs bf16 autocast is the default (`--dtype auto`).
#
# ## 9. The full run: MiniMind2-Small on GPUs
#
# The same module trains upstream's 25.8M-parameter MiniMind2-Small on its `pretrain_hq.jsonl`
# with MiniMind2's tokenizer (vocabulary 6400). Choosing an upstream preset switches the defaults
# to upstream's settings — one epoch, documents padded to 340 tokens, 32 sequences × 8
# accumulation steps per optimizer step, peak learning rate $5\times10^{-4}$ — and any option
# given on the command line still wins (`--help` lists them all). On one GPU:
#
# ```bash
# python -m minimind.train.pretrain --preset minimind2-small \
#     --tokenizer path/to/minimind2_tokenizer --data_path path/to/pretrain_hq.jsonl --out_dir out/pretrain_512
# ```
#
# On one machine with 8 GPUs (`torchrun` starts one process per GPU; `--batch_size` is per
# process, so `--grad_accum 1` keeps the same 256 sequences per optimizer step):
#
# ```bash
# torchrun --standalone --nproc_per_node 8 -m minimind.train.pretrain --preset minimind2-small \
#     --tokenizer path/to/minimind2_tokenizer --data_path path/to/pretrain_hq.jsonl \
#     --grad_accum 1 --out_dir out/pretrain_512
# ```
#
# On two machines, run on each (with `--node_rank 1` on the second) — torchrun's standard
# rendezvous:
#
# ```bash
# torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
#     -m minimind.train.pretrain …same flags…
# ```
#
# The engine picks NCCL for GPUs (gloo on CPU), bf16 autocast where the GPU supports it, a
# `DistributedSampler` so the processes split every batch, and writes checkpoints from rank 0
# only. If the job dies, the same command with `--resume` continues from the last checkpoint
# (`--save_interval`): weights, optimizer, learning-rate step, every process's random state and the
# position in the data are restored, so the finished weights are those of an uninterrupted run
# (tested on CPU, bit for bit). The output folder holds `model.safetensors` and `config.json`,
# which `minimind.checkpoint.load_model`, the chat CLI and the exporters read.
#
# ## Exercises
#
# ```{exercise} The next-token loss
# :label: ex-03-loss
# Write `next_token_loss(logits, labels)` for unshifted labels: logits `(B, T, V)`, labels `(B, T)`
# with −100 where nothing is supervised. Check it with `minimind.checks.training.check_next_token_loss`.
# ```
#
# ```{solution} ex-03-loss
# :class: dropdown
# Section 2's `next_token_loss` compares `logits[:, :-1]` with `labels[:, 1:]` and passes
# `ignore_index=-100` to `F.cross_entropy`; the cell below checks it.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.training import check_lr_schedule, check_next_token_loss, check_packing

check_next_token_loss(next_token_loss)

# %% [markdown]
# ```{exercise} The schedule
# :label: ex-03-schedule
# Write `cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr_ratio)` from the formula in
# section 3 and check it with `check_lr_schedule`. Then: with `warmup_steps = 0`, what learning rate
# does the first step use, and what does upstream's formula give for it?
# ```
#
# ```{solution} ex-03-schedule
# :class: dropdown
# Section 3's `cosine_lr` passes the check below. With no warm-up the first step uses the peak
# $\eta$; upstream's formula evaluates $t = 1$ and gives $\eta(0.1 + 0.45(1 + \cos(\pi/T)))$, a hair
# below the peak.
# ```

# %% tags=["nbval-check-output"]
check_lr_schedule(cosine_lr)

# %% [markdown]
# ```{exercise} Packing
# :label: ex-03-packing
# Write `pack_documents(documents, seq_len, bos, eos)` and check it with `check_packing`. Then
# compute how many training positions per epoch packing saves over static padding to 128 on this
# corpus.
# ```
#
# ```{solution} ex-03-packing
# :class: dropdown
# Section 1's `pack_documents` passes the check below. Static padding computes
# `len(padded) * 128` positions per epoch for `padded.tokens.numel()` real tokens; packing computes
# only the real ones (minus the dropped tail), so it saves the difference — the cell prints it.
# ```

# %% tags=["nbval-check-output"]
check_packing(pack_documents)
saved = len(padded) * 128 - len(packed) * 128
print(f"static padding computes {len(padded) * 128:,} positions per epoch, packing {len(packed) * 128:,}: "
      f"{saved:,} fewer ({saved / (len(padded) * 128):.0%})")

# %% [markdown]
# ```{exercise} Why ln V, and why the unigram entropy?
# :label: ex-03-baselines
# Show that a model whose logits are all equal has loss exactly $\ln V$, and that no model that
# ignores the context can have an expected loss below the unigram entropy $H$.
# ```
#
# ```{solution} ex-03-baselines
# :class: dropdown
# Equal logits give $p(v) = 1/V$ for every token, so every term of the loss is $-\ln(1/V) = \ln V$.
# A model that ignores the context predicts one distribution $q$ for every position; its expected
# loss is the cross-entropy $-\sum_v p(v)\ln q(v) = H(p) + \mathrm{KL}(p\,\|\,q) \ge H(p)$, with
# equality when $q = p$, the token frequencies.
# ```
#
# ```{exercise} A learning-rate sweep
# :label: ex-03-sweep
# Train the `book` preset for 150 steps with `TrainConfig(max_steps=150, warmup_steps=10, lr=…)`
# at peak rates $3\times10^{-4}$, $10^{-3}$, $3\times10^{-3}$ and $10^{-2}$ and plot the four loss
# curves. Which is fastest at 150 steps? Does the ranking hold at 1,000 steps?
# ```
#
# ```{solution} ex-03-sweep
# :class: dropdown
# `for lr in (3e-4, 1e-3, 3e-3, 1e-2): torch.manual_seed(0); r = train(TrainConfig(max_steps=150,
# warmup_steps=10, lr=lr, out_dir="", progress=False, log_interval=5), MiniMind(config), packed,
# collate_causal_lm); plot_metrics(r.records, ax=ax, label_prefix=f"{lr:g} ")`. Small models
# tolerate large rates: $3\times10^{-3}$ is usually best over short budgets, $10^{-2}$ tends to
# spike early and then catch up or stall, $3\times10^{-4}$ is far behind. Over longer runs the gap
# between the good rates shrinks — compare curves at the same step budget, never at the same
# wall-clock time on different machines.
# ```
#
# ```{exercise} How long to pretrain?
# :label: ex-03-budget
# Pretrain a second model with `zoo.config("pretrained", max_steps=2500, out_dir="budget2500")`
# (`minimind.train.pretrain.run(config)`; a few minutes) and run section 7's cloze probe on it.
# Then fine-tune it as chapter 5 does (`zoo.config("sft", init_from="budget2500", out_dir="")`)
# and score the held-out people. Which of the two falls more between 2,500 and 4,000 steps: the
# share of facts the probe finds, or the share of held-out questions the chat model answers?
# ```
#
# ```{solution} ex-03-budget
# :class: dropdown
# `short = minimind.train.pretrain.run(config).model.eval()`, then
# `cloze_recall(short, world.cloze("heldout", lang), lang)` for both languages; for the chat model,
# `r = minimind.train.sft.run(sft_config)` and `exact_match(r.model.eval(), tokenizer, items)` over
# `world.questions("heldout", "train")` in each language, as in chapter 5, and compare both with
# this chapter's model and chapter 5's table. Run this way when the budget was chosen (seed 0, one
# thread), the 2,500-step model's chat model answered 17 % / 15 % of the held-out questions
# (English / Chinese) and 79 % / 77 % of the *trained* ones, while the probe of the same model
# ranked about half of the English held-out facts first and three in five of the Chinese. Ranking the true value first among all values is a weaker test
# than writing it after a question in a layout the model learnt later: the probe says a fact is
# there, the chat model's answers say whether it can be used. The book's budget was chosen by the
# second measurement, not by the loss curve, which changes little over the last thousands of
# steps (the losses printed in section 6).
# ```
#
# ## Summary
#
# - Pretraining data become sequences of `[bos] + text + [eos]`; packing fills every position,
#   padding wastes a share of the compute (measured above) and cuts long documents.
# - The loss is the next-token cross-entropy; it starts at $\ln V$, and the unigram entropy marks
#   where the context starts to help. The chapter model ends far below both.
# - A training step is a dozen lines; the engine runs the same computation (checked to 1e-4) and
#   adds accumulation, precision, DDP, metrics and exact resume.
# - A cloze probe shows what the loss curve cannot: the model stored many of the facts of the
#   biographies, nearly all of them, including those of people it was never asked about; and it
#   works held-out sums in the corpus's format.
#
# ## Further reading
#
# - Language models as next-token predictors trained at scale: {cite}`radford2019language`.
# - AdamW, decoupled weight decay: {cite}`loshchilov2019adamw`; cosine schedules: {cite}`loshchilov2017sgdr`;
#   warm-up with large batches: {cite}`goyal2017accurate`.
# - How loss falls with parameters, data and compute: {cite}`kaplan2020scaling`, {cite}`hoffmann2022chinchilla`.
# - How knowledge is stored during pretraining and when it can be extracted: {cite}`allenzhu2023physics31`.
# - Upstream MiniMind: {cite}`gong2024minimind`.
