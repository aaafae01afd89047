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
# # Chapter 8 — Reasoning: think first, then answer
#
# A reasoning model writes out its working before it commits to an answer:
# `<think>…</think><answer>…</answer>`. This chapter teaches the book's chat model to do that on
# arithmetic word problems, and measures two things separately: whether the reply has the right
# *format* (a parser can find the answer) and whether the answer is *right*. It builds the loss that
# upstream MiniMind uses for this stage — cross-entropy with the four tag tokens up-weighted — from
# scratch, fixes the two places where upstream went wrong, and measures what the weight actually
# buys, over several seeds. Then it scores the reasoning model on held-out problems, trains the same
# model to answer *without* the working to measure what the thinking is worth, and cuts the thinking
# short to see what a budget costs.
#
# **Learning objectives**
#
# - explain why the format of a reply is decided at a handful of token positions, and what up-weighting them does to the gradient;
# - implement the tag-weighted loss, and justify dividing by the sum of the weights rather than by the token count;
# - parse and score reasoning replies, keeping format adherence and answer accuracy apart;
# - run an ablation over the tag weight, over several seeds, and read format adherence and accuracy *against training steps*;
# - score a reasoning model with intervals, on held-out problems and on phrasings it never saw, and diagnose its errors;
# - measure what writing out the working is worth against answering directly, and what a thinking budget costs.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import random
import re
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minimind import zoo
from minimind.runtime import cpu_threads, replica_seed
from minimind.checks.bands import expect, expect_outside
from minimind.data.datasets import SFTDataset, collate_causal_lm
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import generate_replies, parse_reasoning, score_answers, wilson_interval
from minimind.losses import masked_cross_entropy, reasoning_weighted_loss

# Every core (MINIMIND_THREADS overrides it; `make test` runs one chapter per core on one thread each).
# Figures that float rounding moves differ a little on another CPU or thread count, so the chapter
# asserts them against bands measured across seeds and kernel paths (minimind.checks.bands).
torch.set_num_threads(cpu_threads())
torch.manual_seed(0)
random.seed(0)
tokenizer = zoo.tokenizer()
world = build_world(seed=0)

# %% [markdown]
# ## 1. What a reasoning reply looks like
#
# The book's reasoning data are arithmetic word problems — two-digit sums, three-digit sums and
# three-digit differences, in English and Chinese — whose replies work column by column, least
# significant digit first, as you would on paper. The working first restates the two operands
# (copying two numbers out of a sentence is easy; finding the tens digit of a number somewhere in a
# sentence, at every step, is not), then writes each column with the carry it received — for a
# difference, the top digit less the borrow it gave, plus ten if it must borrow. The working sits in
# a think block; the answer, alone, in an answer block:

# %% tags=["nbval-check-output"]
rows = list(read_jsonl(dataset_path("reason", "train"), "sft"))
for row in rows[:2]:
    for message in row["conversations"]:
        print(f"[{message['role']}] {message['content']}")
    print()
print(f"{len(rows)} training problems; {len(world.problems('val'))} held-out problems and "
      f"{len(world.problems('reworded'))} in new phrasings (no (kind, a, b) shared)")

# %% [markdown]
# The same working appears in the pretraining corpus (chapter 4): worked problems, each after its
# question, in plain text — never one of the held-out problems. That is where the model learnt the
# procedure, as large models learn arithmetic from the worked solutions in their corpora; this
# chapter teaches the chat model *when* to use it and in what frame.
#
# The questions, though, come in more wordings than pretraining's. Seven in ten training prompts
# are re-worded in one of eight to ten further phrasings per operation and language
# (`REASON_EXTRA_TEMPLATES` in `minimind.data.synthetic`: "Compute 23 + 45.", "Subtract 45 from
# 302.", "求23与45的和。", word problems about shells or cakes), with the same numbers, working and
# answer. Taught with the three or four phrasings of the worked documents alone, a model learns
# those sentences rather than how to find the two numbers in a question: asked in other words, its
# working starts from the wrong numbers, and chapter 12's RL, which trains on such questions, has
# nothing right to reinforce. None of the extra phrasings is one this chapter scores as new
# (section 6) or one chapter 12 trains on — exercise {ref}`ex-07-phrasings` measures what they buy.
#
# In the book's tokenizer the four tags are single tokens with ids 3–6 (chapter 1), so "the
# positions where the model writes a tag" is a well-defined set. Below is one training example as
# the model sees it: every token, whether the loss supervises it (the assistant reply and its
# closing `<|im_end|>`), and the four tag targets marked.

# %% tags=["nbval-check-output"]
tag_ids = tokenizer.reasoning_tag_ids
print("tag ids:", dict(zip(("<think>", "</think>", "<answer>", "</answer>"), tag_ids)))
example = SFTDataset(dataset_path("reason", "train"), tokenizer, max_seq_len=192)[1]
ids, labels = example["input_ids"], example["labels"]
pieces = []
for token, label in zip(ids.tolist(), labels.tolist()):
    text = tokenizer.decode([token]).replace("\n", "⏎")
    pieces.append(f"[{text}]" if label == -100 else (f"**{text}**" if token in tag_ids else text))
print("".join(pieces))
supervised = int((labels != -100).sum())
tags_here = int(torch.isin(labels, torch.tensor(tag_ids)).sum())
print(f"\n{len(ids)} tokens, {supervised} supervised, {tags_here} of them tags ({tags_here / supervised:.1%})")
assert tags_here == 4 and all(int((ids == t).sum()) == 1 for t in tag_ids)

# %% [markdown]
# Brackets mark what the loss ignores (the system prompt, the question, the `assistant` header);
# bold marks the tag targets. Four positions out of the supervised ones decide the format; every
# other supervised token is content.
#
# ## 2. Why format supervision matters
#
# The chat model from chapter 5 has never seen a tag. Before any reasoning training, its replies to
# held-out problems look like this:

# %%
val_problems = world.problems("val")
probe = [p for p in val_problems if p.kind == "add2"][:3]
sft_model = zoo.sft()
for problem, reply in zip(probe, generate_replies(sft_model, tokenizer, [p.prompt for p in probe], max_new_tokens=40)):
    print(f"{problem.prompt}\n  → {reply!r}   parsed: {parse_reasoning(reply)}")

# %% [markdown]
# Nothing a parser can read. A reasoning model is only useful if its replies can be taken apart:
# an application shows the answer and hides (or folds) the thinking, a grader compares the answer,
# a reinforcement-learning reward (upstream's GRPO stage) checks the format first. So the format is not
# decoration — and it hangs on very few decisions: open the think block at the first position,
# close it, open the answer, close it. Upstream MiniMind's users met exactly this: a reasoning
# model that never emits `<think>` (upstream issues #270 and #321).
#
# Upstream's answer is to up-weight those positions in the loss. Let token $t$ of the batch have
# cross-entropy $\ell_t$, a mask $m_t \in \{0, 1\}$ (is it supervised?) and a weight
#
# $$
# w_t = \begin{cases} \lambda & \text{if the target } y_t \text{ is a tag,} \\ 1 & \text{otherwise,} \end{cases}
# \qquad
# \mathcal{L}_\text{weighted} = \frac{\sum_t m_t\, w_t\, \ell_t}{\sum_t m_t\, w_t}.
# $$
#
# With $k$ tag targets among $n$ supervised tokens, the share of the gradient that goes to the tags
# is $\dfrac{\lambda k}{\lambda k + n - k}$: for the example above ($k = 4$) it grows from a few
# percent at $\lambda = 1$ to about a third at $\lambda = 10$.
#
# Two details matter, and upstream MiniMind2's `train_reason.py` gets both wrong:
#
# 1. **Which positions.** In MiniMind2's vocabulary `<think>` is not one token but `<`, `th`,
#    `ink`, `>`; upstream weighted every target in the set of those sub-word ids, so every `<`,
#    `>`, `th`, `er`, `w` anywhere in a reply got ten times the weight. Here the tags are single
#    tokens, and only those four ids are weighted.
# 2. **What to divide by.** Upstream divides the weighted sum by the *number* of supervised
#    tokens, $\sum_t m_t$, not by the sum of the weights. Then the loss is no longer a mean: its
#    scale grows with $\lambda$ and with the fraction of tags in the batch, a hidden change of learning
#    rate that varies from batch to batch (Adam divides a *constant* scale out, a fluctuating one
#    it does not) and that makes gradient clipping bite harder. Dividing by $\sum_t m_t w_t$ keeps the
#    loss a weighted *mean*: on the scale of a cross-entropy whatever $\lambda$, and equal to the
#    plain SFT loss when $\lambda = 1$.
#
# ## 3. The loss, built in the notebook

# %%
def weighted_tag_loss(logits, labels, tag_ids, tag_weight, normalize="weighted"):
    """Cross-entropy with tag targets weighted; labels unshifted, -100 ignored."""
    targets = labels[:, 1:]                                                # (B, T-1): what logits[:, :-1] predict
    per_token = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets,  # (B, V, T-1) vs (B, T-1)
                                ignore_index=-100, reduction="none")
    mask = (targets != -100).float()
    weights = mask * torch.where(torch.isin(targets, torch.tensor(tag_ids)), tag_weight, 1.0)
    denominator = weights.sum() if normalize == "weighted" else mask.sum()
    return (weights * per_token).sum() / denominator


batch = collate_causal_lm([SFTDataset(dataset_path("reason", "train"), tokenizer, 192)[i] for i in range(8)])
with torch.no_grad():
    logits = sft_model(batch["input_ids"]).logits
for weight in (1.0, 3.0, 10.0):
    for normalize in ("weighted", "tokens"):
        ours = weighted_tag_loss(logits, batch["labels"], tag_ids, weight, normalize)
        theirs = reasoning_weighted_loss(logits, batch["labels"], tag_ids, weight, normalize)
        assert torch.allclose(ours, theirs, atol=1e-5)
    print(f"λ = {weight:>4}: weighted mean {reasoning_weighted_loss(logits, batch['labels'], tag_ids, weight):.4f}, "
          f"upstream's normalisation {reasoning_weighted_loss(logits, batch['labels'], tag_ids, weight, 'tokens'):.4f}")
assert torch.allclose(reasoning_weighted_loss(logits, batch["labels"], tag_ids, 1.0),
                      masked_cross_entropy(logits, batch["labels"]), atol=1e-6)
print("✓ the notebook's loss equals minimind.losses.reasoning_weighted_loss; λ = 1 is plain cross-entropy")

# %% [markdown]
# Before any reasoning training the chat model is badly wrong about tags and content alike (it has
# never seen a reply of this kind). The weighted mean moves only a little with $\lambda$ — it stays a
# mean of cross-entropies; upstream's version grows by more than half at $\lambda = 10$, and that
# growth is the hidden change of learning rate described above, not information.

# %% [markdown]
# ## 4. Reading a reply: format and answer, kept apart
#
# To measure anything we need a parser. `parse_reasoning(text)` returns `(think, answer,
# well_formed)`: the reply is *well formed* when it is exactly one think block followed by one
# answer block (only whitespace around them, each tag once). The answer is extracted whenever a
# complete answer block exists, well formed or not — so that a reply with a right answer in a
# broken frame counts as right for *accuracy* and as wrong for *format adherence*. Mixing the two
# into one number would hide which of them a change affects.

# %% tags=["nbval-check-output"]
crafted = [
    "<think>\n2 + 3: 2+3=5 So 5.\n</think>\n<answer>5</answer>",    # the trained format
    "<answer>5</answer>",                                             # no working
    "<think>\n2 + 3: 2+3=5\n</think>\n<answer>5",                     # answer never closed
    "The answer is <answer>5</answer> <think>easy</think>",          # wrong order, text around
]
for reply in crafted:
    print(f"{reply!r:70} → {parse_reasoning(reply)}")
score = score_answers(crafted, ["5"] * len(crafted))
print(f"format adherence {score.format_rate:.2f}, accuracy {score.accuracy:.2f}")
assert (score.well_formed, score.correct) == (1, 3)

# %% [markdown]
# ## 5. The ablation: what the tag weight buys
#
# Short fine-tuning runs from the same chat model, on the same problems, differing only in
# $\lambda \in \{1, 3, 10\}$ — and, since one run of each says little, each repeated with three
# seeds (the seed sets the order of the problems and the dropout). The runs are
# `minimind.train.reason.run`, the code behind `python -m minimind.train.reason`, with
# `--tag_weight` set. Every few steps a callback measures, on held-out problems:
#
# - **tag confidence** — teacher-forced on the reference replies: the probability the model gives
#   the right tag at each of the four tag positions (what the weight acts on directly);
# - **content loss** — teacher-forced cross-entropy of every other reply token (what the weight
#   takes gradient away from);
# - **format adherence** and **accuracy** of the model's own greedy replies (what a user sees).

# %%
from minimind.train.reason import ReasonConfig, run as train_reasoning

ABLATION_WEIGHTS, ABLATION_SEEDS, ABLATION_STEPS = (1.0, 3.0, 10.0), (0, 1, 2), 30
MEASURE_EVERY, REPLY_STEPS = 5, (10, 15, 20, 30)
val_set = SFTDataset(dataset_path("reason", "val"), tokenizer, max_seq_len=192)
heldout = collate_causal_lm([val_set[i] for i in range(64)])
format_probe = val_problems[:48]  # the kinds in turn: 16 of each
tag_tensor = torch.tensor(tag_ids)


@torch.no_grad()
def teacher_forced(model):
    """Mean probability of the right tag at the tag positions, and the content tokens' loss."""
    was_training = model.training
    model.eval()
    log_probs = model(heldout["input_ids"]).logits[:, :-1].log_softmax(-1)
    model.train(was_training)
    targets = heldout["labels"][:, 1:]
    target_log_probs = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, T-1)
    is_tag = torch.isin(targets, tag_tensor)
    is_content = (targets != -100) & ~is_tag
    return target_log_probs[is_tag].exp().mean().item(), -target_log_probs[is_content].mean().item()


def own_replies(model):
    replies = generate_replies(model, tokenizer, [p.prompt for p in format_probe], max_new_tokens=60)
    return score_answers(replies, [p.answer for p in format_probe]), replies


def ablation_run(weight, seed):
    history = {"step": [], "tag_prob": [], "content_ce": [], "reply_step": [], "format": [], "accuracy": [],
               "malformed": {}}

    def measure(info):
        if info.step % MEASURE_EVERY == 0:
            tag_prob, content_ce = teacher_forced(info.model)
            history["step"].append(info.step)
            history["tag_prob"].append(tag_prob)
            history["content_ce"].append(content_ce)
        if info.step in REPLY_STEPS:
            score, replies = own_replies(info.model)
            history["malformed"][info.step] = [r for r in replies if not parse_reasoning(r)[2]]
            history["reply_step"].append(info.step)
            history["format"].append(score.format_rate)
            history["accuracy"].append(score.accuracy)

    config = zoo.config("reasoning", max_steps=ABLATION_STEPS, tag_weight=weight, seed=replica_seed(seed),
                        init_from=str(zoo.path("sft")), out_dir="", log_interval=ABLATION_STEPS)
    train_reasoning(config, callbacks=[measure])
    return history


ablation = {(weight, seed): ablation_run(weight, seed) for weight in ABLATION_WEIGHTS for seed in ABLATION_SEEDS}


def mean_over_seeds(weight, key):
    runs = [ablation[weight, seed][key] for seed in ABLATION_SEEDS]
    return [sum(values) / len(values) for values in zip(*runs)]


def steps_to_format(history, threshold=0.9):
    """The first measured step at which at least `threshold` of the greedy replies are well formed."""
    return next((step for step, rate in zip(history["reply_step"], history["format"]) if rate >= threshold), None)


steps = ablation[ABLATION_WEIGHTS[0], ABLATION_SEEDS[0]]["step"]
print("step:                  " + " ".join(f"{s:>5}" for s in steps))
for weight in ABLATION_WEIGHTS:
    print(f"λ={weight:>4}  P(right tag)   " + " ".join(f"{p:5.2f}" for p in mean_over_seeds(weight, "tag_prob")))
for weight in ABLATION_WEIGHTS:
    print(f"λ={weight:>4}  content CE     " + " ".join(f"{c:5.2f}" for c in mean_over_seeds(weight, "content_ce")))
print(f"(means over seeds {ABLATION_SEEDS})\n")
print(f"{'':>8} " + "  ".join(f"step {s}: format / right" for s in REPLY_STEPS) + "   steps to 90% well formed, per seed")
summary = {}
for weight in ABLATION_WEIGHTS:
    formats, accuracies = mean_over_seeds(weight, "format"), mean_over_seeds(weight, "accuracy")
    reached = [steps_to_format(ablation[weight, seed]) for seed in ABLATION_SEEDS]
    summary[weight] = {"format_at_15": formats[REPLY_STEPS.index(15)], "accuracy_final": accuracies[-1], "reached": reached}
    print(f"λ={weight:>4}  " + "     ".join(f"{f:5.0%} / {a:4.0%}" for f, a in zip(formats, accuracies))
          + f"      {reached}")
for weight in ABLATION_WEIGHTS:
    for seed in ABLATION_SEEDS:
        history = ablation[weight, seed]
        expect(f"reasoning.ablation.lambda_{weight:g}.seed{seed}.format_at_15", history["format"][REPLY_STEPS.index(15)],
               n=len(format_probe))
        expect(f"reasoning.ablation.lambda_{weight:g}.seed{seed}.tag_prob_at_10", history["tag_prob"][steps.index(10)])
tag_prob_at_10 = [mean_over_seeds(w, "tag_prob")[steps.index(10)] for w in ABLATION_WEIGHTS]
assert tag_prob_at_10 == sorted(tag_prob_at_10), "a larger weight makes the model surer of the tags sooner"

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for index, weight in enumerate(ABLATION_WEIGHTS):
    colour = f"C{index}"
    for seed in ABLATION_SEEDS:
        history = ablation[weight, seed]
        label = f"λ = {weight:g}" if seed == ABLATION_SEEDS[0] else None
        axes[0].plot(history["step"], history["tag_prob"], color=colour, alpha=0.7, label=label)
        axes[1].plot(history["step"], history["content_ce"], color=colour, alpha=0.7, label=label)
        axes[2].plot(history["reply_step"], history["format"], color=colour, alpha=0.7, marker="o", ms=3, label=label)
axes[0].set(xlabel="optimizer step", ylabel="P(right tag), teacher-forced", title="tag confidence (held out)")
axes[1].set(xlabel="optimizer step", ylabel="cross-entropy (nats)", title="content tokens (held out)", yscale="log")
axes[2].set(xlabel="optimizer step", ylabel="fraction well formed", title="format of the greedy replies", ylim=(0, 1.02))
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# What the weight buys is confidence in the tags: at every measured step the mean probability of the
# right tag rises with $\lambda$ (asserted), and the content tokens pay for it a little early on.
# Whether it also buys well-formed replies sooner is less sure: the model's own greedy replies become
# well formed only once the working between the tags has taken shape. In the stored run the larger
# weights get there first — $\lambda = 10$ is at 90% by step 20 on every seed, $\lambda = 1$ not by
# step 30 (the last column) — but at step 15 the shares swing across the runs measured for the bands
# file from almost none to almost all, for every weight (the "not checked" lines), so the chapter
# asserts only the tag confidence. None of the replies is right yet at step 30: answers come later.
# The book keeps upstream's default, $\lambda = 10$: its reasoning model, trained fifteen times
# longer, is well formed on every held-out problem below, so the choice decides how the first tens
# of steps look, not where training ends.
#
# ## 6. The reasoning model
#
# The book's reasoning model is the same run carried on for longer: `python -m
# minimind.train.reason` with its defaults (450 steps of 16 problems), built once and cached by
# `zoo.path("reasoning")`. Its loss curves — the plain cross-entropy and the tag cross-entropy
# the stage logs:

# %%
reasoning_folder = zoo.path("reasoning")
records = zoo.metrics(reasoning_folder)
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot([r["step"] for r in records], [r["ce"] for r in records], label="all reply tokens")
ax.plot([r["step"] for r in records], [r["tag_ce"] for r in records], label="tag tokens only")
ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats)", yscale="log",
       title=f"reasoning training (λ = {zoo.config('reasoning').tag_weight:g})")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# Scored on all 600 held-out problems (200 of each kind, none of them in any training or
# pretraining text), greedy, with a 95% interval (Wilson's) on each share — and on 600 more asked
# in phrasings that appear nowhere in training ("Add 47 and 85.", "把…和…加起来是多少？"):

# %%
KINDS = ("add2", "add3", "sub3")
TARGETS = {"add2": 0.95, "add3": 0.85, "sub3": 0.75}
reasoner = zoo.load(reasoning_folder)
reworded_problems = world.problems("reworded")


def score_by_kind(model, problems, require_think=True):
    """{kind: (ReasoningScore, replies)} for `problems`, greedy."""
    results = {}
    for kind in KINDS:
        chosen = [p for p in problems if p.kind == kind]
        replies = generate_replies(model, tokenizer, [p.prompt for p in chosen], max_new_tokens=80)
        results[kind] = score_answers(replies, [p.answer for p in chosen], require_think=require_think), replies
    return results


def share(score, correct=None):
    k = score.correct if correct is None else correct
    low, high = wilson_interval(k, score.n)
    return f"{k / score.n:4.0%} [{low:.0%}, {high:.0%}]"


thinking = {"held out": score_by_kind(reasoner, val_problems), "reworded": score_by_kind(reasoner, reworded_problems)}
print(f"{'':>5}  {'well formed':>11}  {'right, held out':>18}  {'right, new phrasings':>21}")
for kind in KINDS:
    held, reworded = thinking["held out"][kind][0], thinking["reworded"][kind][0]
    print(f"{kind:>5}  {held.format_rate:>11.0%}  {share(held):>18}  {share(reworded):>21}   (n = {held.n} and {reworded.n})")
    assert held.format_rate >= 0.95 and held.accuracy > 0.5, kind
    for group, score in (("heldout", held), ("reworded", reworded)):
        expect(f"reasoning.{kind}.{group}.accuracy", score.accuracy, n=score.n)
        expect(f"reasoning.{kind}.{group}.format", score.format_rate, n=score.n)
print("the book's targets on held-out problems: " + ", ".join(
    f"{kind} ≥ {TARGETS[kind]:.0%} {'met' if thinking['held out'][kind][0].accuracy >= TARGETS[kind] else 'NOT met'}"
    for kind in KINDS))

# %% [markdown]
# Where it still goes wrong, each wrong reply has one of three causes, told apart by reading it:
# the working restates other operands than the question's (a copying error), the columns of the
# restated operands are miscomputed (an arithmetic error), or the working is right and the answer
# block says something else.

# %%
def diagnose(problem, reply):
    think, answer, _ = parse_reasoning(reply)
    restated = re.match(r"\s*(\d+) ([+-]) (\d+)", think or "")
    if not restated or (int(restated.group(1)), int(restated.group(3))) != (problem.a, problem.b):
        return "copied wrong operands"
    result = re.findall(r"(?:So|所以是)\s*(\d+)", think)
    if not result or int(result[-1]) != problem.answer:
        return "miscomputed the columns"
    return "answer differs from the working" if (answer or "").strip() != str(problem.answer) else "right"


for kind in KINDS:
    causes = Counter(diagnose(p, r) for p, r in zip([p for p in val_problems if p.kind == kind],
                                                     thinking["held out"][kind][1]))
    print(f"{kind}: " + ", ".join(f"{cause} {count}" for cause, count in causes.most_common()))
wrong = [(p, r) for p, r in zip([p for p in val_problems if p.kind == "sub3"], thinking["held out"]["sub3"][1])
         if diagnose(p, r) != "right"]
for problem, reply in wrong[:2]:
    print(f"\n{problem.prompt}  (reference {problem.answer})\n{reply}")

# %% [markdown]
# The working is a procedure the model learnt, not a table of answers: every problem here is new to
# it, and nine in ten two-digit sums and most three-digit sums come out right. In the stored run
# two of the book's three targets are missed by a few points (the line above the diagnosis); in the
# other two runs measured for the bands file all three are met. Subtraction, with its borrows, is
# harder: about half its wrong replies miscompute a column (a borrow not taken where it is due),
# and a few answers do not follow from the working's own digits (the second example). The other
# wrong replies, and nearly all the wrong sums, start from the wrong numbers (the first example
# copies 604 as 607): with a dozen phrasings per operation instead of three or four, finding the
# operands is a skill of its own, learnt on the same budget of steps. The new
# phrasings are a different story: asked in words that never occur in training, the model is right
# far less often, even after the extra phrasings of section 1 — in the stored run it gets under a
# third of the new-phrasing sums and almost none of the differences. Reading a question carries over
# to new wordings only partly, and how far changes from run to run more than anything else in the
# chapter: across the bands file's runs the reworded shares span from a few per cent to nearly all. (The reworded shares are printed with
# their intervals and asserted against their bands; the book's targets are on the training
# phrasings.)
#
# ## 7. Thinking versus answering directly
#
# Is the working worth its tokens? The comparison that answers it: the same chat model, the same
# problems, the same 450 steps — but replies that hold only the answer block, `<answer>532</answer>`
# (the dataset `reason_direct`, cached as `zoo.path("reasoning_direct")`). Everything but the working
# is equal, so the difference is what writing it out does.

# %%
direct = zoo.load("reasoning_direct")
answering = score_by_kind(direct, val_problems, require_think=False)
print(f"{'':>5}  {'with the working':>18}  {'answer only':>18}  {'difference':>10}")
gaps = {}
for kind in KINDS:
    with_working, answer_only = thinking["held out"][kind][0], answering[kind][0]
    gaps[kind] = with_working.accuracy - answer_only.accuracy
    print(f"{kind:>5}  {share(with_working):>18}  {share(answer_only):>18}  {gaps[kind]:>+10.0%}")
    expect(f"reasoning.direct.{kind}.accuracy", answer_only.accuracy, n=answer_only.n)
    expect(f"reasoning.direct.{kind}.format", answer_only.format_rate, n=answer_only.n)
print(f"\nanswer-only replies, e.g.: {answering['add3'][1][0]!r} (reference {[p for p in val_problems if p.kind == 'add3'][0].answer})")
assert gaps["add3"] >= 0.30 and gaps["sub3"] >= 0.30
expect_outside("reasoning.add3.heldout.accuracy", answering["add3"][0].accuracy, "answering three-digit sums without the working")

# %% [markdown]
# Without the working the same network, trained the same way, gets almost nothing right: it writes
# a number of the right length that is not the sum. The difference is not what the model knows — both
# start from the same chat model — but how many steps of computation it gets: one forward pass per
# token, and the working gives the answer one token of computation per column instead of all the
# columns at once. (Exercise "How long must the direct model train?" asks whether more steps close the
# gap.)
#
# ## 8. A thinking budget
#
# At inference the length of the thinking can be capped: render the prompt with the think block
# already opened (`enable_thinking=True` appends `<think>`), count the tokens generated inside it,
# and once the budget is spent force `</think>` — the model then has to answer with whatever it has.
# `SamplingParams(thinking_budget=…)` in `minimind.generate` does this (the same trick that
# "budget forcing" uses to make large models think *less* — or, by suppressing `</think>` and appending
# "Wait", longer).

# %%
budget_problems = [p for p in val_problems if p.kind in ("add2", "add3")]
budgets = (0, 8, 16, 32, None)
budget_scores = {}
for budget in budgets:
    budget_replies = generate_replies(reasoner, tokenizer, [p.prompt for p in budget_problems], max_new_tokens=80,
                                      open_thinking=True, thinking_budget=budget)
    budget_scores[budget] = score_answers(budget_replies, [p.answer for p in budget_problems])
    think_tokens = [len(tokenizer.encode(parse_reasoning(r)[0] or "")) for r in budget_replies]
    label = "no limit" if budget is None else f"{budget:>3} tokens"
    print(f"budget {label:>10}: mean thinking {sum(think_tokens) / len(think_tokens):5.1f} tokens, "
          f"{budget_scores[budget].format_rate:.0%} well formed, {share(budget_scores[budget])} right")
    if budget == 16:
        print(f"   e.g. {budget_replies[0]!r}")
assert budget_scores[None].accuracy > max(budget_scores[b].accuracy for b in (0, 8, 16))
for budget, score in budget_scores.items():
    expect(f"reasoning.budget_{budget}.accuracy", score.accuracy, n=score.n)

# %% [markdown]
# A budget that cuts the working short breaks the answer: at 8 or 16 tokens the forced `</think>`
# lands in the middle of the operands or the columns and the model stops without an answer block,
# so almost nothing is right; at 32 tokens most workings fit and about half the replies are right.
# A budget of 0 is the surprise: the model, shown `<think>` and `</think>` back to back, writes its
# working *after* the closed block anyway and then the answer — every reply is malformed and many are
# right (one in sixteen in the stored run, a third to more than half in the other runs measured
# for the bands file). It was never trained on a forced close, so it does what its training made likely: work the
# sum out first. Budget forcing needs a model trained on truncated thoughts.

# %% [markdown]
# ## Exercises
#
# ```{exercise} Upstream's normalisation, in numbers
# :label: ex-07-normalisation
# A batch has $n = 60$ supervised reply tokens, $k = 4$ of them tags, and (for simplicity) every
# token has the same cross-entropy $\ell$. Compute the loss with $\lambda = 10$ under both
# normalisations. By what factor does upstream's version scale the gradient? AdamW divides each
# update by a running estimate of the gradient's size: why does that cancel a *constant* factor but
# not this one? What does gradient clipping at norm 1 do to it?
# ```
#
# ```{solution} ex-07-normalisation
# :class: dropdown
# Weighted mean: $(\lambda k + n - k)\ell / (\lambda k + n - k) = \ell$. Upstream:
# $(\lambda k + n - k)\ell / n = (40 + 56)\ell / 60 = 1.6\,\ell$, so every gradient is 1.6 times
# larger. The factor depends on the share of tags in the batch — a batch of short replies (more
# tags per token) gets a bigger factor than a batch of long ones — so it changes from step to
# step; Adam's running second moment averages over many steps and cannot follow it, so the
# effective learning rate jitters with the batch composition. Clipping caps the gradient norm,
# so when the inflated gradient crosses the threshold the update is rescaled: the weighting then
# changes the direction but the clip decides the size. With the weighted mean neither happens,
# and $\lambda = 1$ is exactly plain SFT.
# ```
#
# ```{exercise} Build the tag-weighted loss
# :label: ex-07-loss
# Without looking at section 3, write `my_loss(logits, labels, tag_ids, tag_weight)`: the weighted
# mean of the next-token cross-entropy where the targets in `tag_ids` weigh `tag_weight`, labels
# unshifted, `-100` ignored. Check it with `minimind.checks.reasoning.check_reasoning_weighted_loss(my_loss)`.
# ```
#
# ```{solution} ex-07-loss
# :class: dropdown
# The notebook's `weighted_tag_loss` is one solution; the cell below passes it to the check. The
# two usual mistakes are weighting by the *input* token instead of the target (the weight belongs to
# the position that predicts the tag, `logits[t-1]` for `labels[t]`) and dividing by the token count.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.reasoning import check_parse_reasoning, check_reasoning_weighted_loss

check_reasoning_weighted_loss(lambda logits, labels, tags, weight: weighted_tag_loss(logits, labels, tags, weight))

# %% [markdown]
# ```{exercise} A parser that keeps format and answer apart
# :label: ex-07-parser
# Write `my_parse(text) -> (think, answer, well_formed)` with the rules of section 4: well formed
# means one think block then one answer block, each tag exactly once, only whitespace around and
# between them; the answer is the stripped content of the first complete answer block, whatever the
# format. Check it with `minimind.checks.reasoning.check_parse_reasoning(my_parse)`.
# ```
#
# ```{solution} ex-07-parser
# :class: dropdown
# `minimind.eval.parse_reasoning` is a solution: a regular expression for the well-formed
# shape (`\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*`, matched against the *whole*
# text), a count of each tag, and a plain search for the first complete answer block otherwise.
# ```

# %% tags=["nbval-check-output"]
check_parse_reasoning(parse_reasoning)

# %% [markdown]
# ```{exercise} Sub-word tags
# :label: ex-07-subwords
# Upstream's tokenizer splits `<think>` into `<`, `th`, `ink`, `>`. Suppose every target whose id is
# one of the sub-words of the four tags got weight 10. Using `tokenizer.tokens` on a few of the
# book's English SFT replies (`dataset_path("sft", "train")`), estimate what fraction of ordinary
# reply tokens would have been up-weighted if our tokenizer had the same problem (take the pieces
# `<`, `>`, `th`, `er`, `w` as the tag sub-words). What would the model learn from that?
# ```
#
# ```{solution} ex-07-subwords
# :class: dropdown
# Count, over the reply tokens, those whose text is one of the pieces. In English text `th` and
# `er` are among the most frequent BPE pieces, so a few percent of all content tokens — far more
# than the four real tags per reply — would carry ten times the weight: the loss would push the
# model hardest on arbitrary letters, not on the format. That is upstream's bug; single-token tags
# (or weighting tag *spans by position*) avoid it.
# ```
#
# ```{exercise} A heavier weight, and upstream's normalisation
# :label: ex-07-ablation
# Re-run `ablation_run` with $\lambda = 30$, and once with $\lambda = 10$ and
# `ReasonConfig(..., loss_normalize="tokens")` (edit the function to pass it). Plot tag confidence
# and content loss against the steps next to the runs above. Does a heavier weight still buy tag
# confidence? What does it cost the content?
# ```
#
# ```{solution} ex-07-ablation
# :class: dropdown
# Expect the tag confidence to saturate within a handful of steps for every $\lambda \ge 10$ —
# there is little left to buy — while the content loss, which gets an ever smaller share of the
# gradient, falls a little more slowly. Upstream's normalisation behaves like a larger learning
# rate on batches rich in tags; on this data its curves lie close to the weighted mean's, because
# AdamW and clipping absorb most of the scale. The point of the weighted mean is not a better
# curve here but a loss whose meaning does not change with $\lambda$.
# ```
#
# ```{exercise} Longer numbers
# :label: ex-07-longer
# Every problem the model saw had two or three digits. Ask the reasoning model four-digit sums
# (`"What is 4821 plus 3976?"` for 200 random pairs) and score them as in section 6, then run
# `diagnose` on the wrong ones. Which part of the procedure carries over to a length never seen,
# and which does not?
# ```
#
# ```{solution} ex-07-longer
# :class: dropdown
# Build the prompts from the training template `"What is {a} plus {b}?"` with `random.Random(0)`,
# reply with `generate_replies(reasoner, tokenizer, prompts, max_new_tokens=100)` and score with
# `score_answers`. Then read the causes: copying the operands is a procedure that does not depend
# on the length, so count how often the restatement is right; the columns are where the length
# matters — look at whether the working writes a fourth column at all, and whether the carry into
# it is right. Whatever the counts, they separate what the model learnt as a rule from what it
# learnt as a pattern of the lengths it saw.
# ```
#
# ```{exercise} How long must the direct model train?
# :label: ex-07-direct
# Section 7 gave both models the same 450 steps. Give the answer-only model more:
# `train_reasoning(zoo.config("reasoning_direct", init_from=str(zoo.path("sft")), out_dir="",
# max_steps=1350), callbacks=[...])` with a callback that scores 60 held-out problems of each kind
# every 150 steps (`score_by_kind` on a subset, `require_think=False`). Plot accuracy per kind
# against the steps, next to the reasoning model's at 450. What does the curve say about where the
# difference between the two models comes from?
# ```
#
# ```{solution} ex-07-direct
# :class: dropdown
# If the answer-only model's three-digit accuracy climbs towards the reasoning model's as the
# steps grow, the working bought *speed of learning*: the same function learnt from fewer examples.
# If it stays flat while the loss on the units digit falls, the network cannot compute the leading
# digits — every carry at once — in one forward pass at this size: the working bought *capacity*,
# serial steps the network does not have. The units digit (no carry needed) and the leading digit
# (every carry needed) of its answers, scored separately, tell the two apart.
# ```
#
# ```{exercise} What the extra phrasings buy
# :label: ex-07-phrasings
# Write the world's training problems as they are, without the re-wording of section 1
# (`{"conversations": p.conversation()}` for each `p` in `world.problems("train")`, one JSON line
# each), train a reasoning model on them with `train_reasoning(zoo.config("reasoning",
# init_from=str(zoo.path("sft")), out_dir="", data_path=...))`, and score it with `score_by_kind`
# on the held-out problems and on the reworded ones, beside the book's reasoning model. Which
# column moves, and by how much? Then look at the working of a few wrong replies in new phrasings:
# which step of the working fails first?
# ```
#
# ```{solution} ex-07-phrasings
# :class: dropdown
# Compare the two columns separately. If the held-out column (the training phrasings) is about the
# same for both models, both learnt the procedure; whatever difference there is then sits in the
# reworded column, and `diagnose` tells what kind it is. Wrong replies counted as "copied wrong
# operands" (or with no working at all) mean the model did not find the numbers in a sentence it
# had not seen: reading a question is learnt from varied questions, like any other skill, while
# the column procedure after the restatement is the same in every phrasing.
# ```
#
# ## Summary
#
# - A reasoning reply is `<think>…</think><answer>…</answer>`; whether a parser can read it is
#   decided at four positions, and the book's tokenizer makes each tag a single token.
# - The tag-weighted loss multiplies the cross-entropy of those targets by $\lambda$. Here it is a
#   weighted *mean* (divided by the sum of the weights): equal to SFT at $\lambda = 1$, on the same
#   scale for every $\lambda$. Upstream divided by the token count and weighted sub-words.
# - Measured on held-out problems over three seeds: a larger $\lambda$ makes the model sure of the
#   tags sooner and costs the content a little early on; the format of its *own* replies follows
#   only once the working has taken shape, and no weight is reliably fastest.
# - The reasoning model gets held-out sums right with its working (most two- and three-digit sums,
#   subtraction less often, the miscomputed borrow being the main cause) — and the same
#   network trained to answer directly gets almost none: the working is computation the answer
#   needs. Phrasings never seen in training are answered far less well, even with the varied
#   training phrasings that reading a question needs.
# - A thinking budget closes the think block by force; too small a budget leaves no answer, and a
#   model never trained on a forced close writes its working after the tag anyway.
#
# ## Further reading
#
# - Writing out intermediate steps: scratchpads {cite}`nye2021scratchpad` and chain-of-thought
#   prompting {cite}`wei2022cot`.
# - Reasoning trained with reinforcement learning, and the `<think>` format: {cite}`deepseek2025r1`.
# - Controlling the length of the thinking at inference ("budget forcing"): {cite}`muennighoff2025s1`.
# - Upstream MiniMind, whose reasoning stage this chapter rebuilds: {cite}`gong2024minimind`.
