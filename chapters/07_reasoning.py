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
# # Chapter 7 — Reasoning: think first, then answer
#
# A reasoning model writes out its working before it commits to an answer:
# `<think>…</think><answer>…</answer>`. This chapter teaches the book's chat model to do that on
# arithmetic word problems, and measures two things separately: whether the reply has the right
# *format* (a parser can find the answer) and whether the answer is *right*. It builds the loss that
# upstream MiniMind uses for this stage — cross-entropy with the four tag tokens up-weighted — from
# scratch, fixes the two places where upstream went wrong, and measures what the weight actually
# buys. Then it looks at the model's thinking — where it goes right and where it goes wrong — and
# at what happens when the thinking is cut short.
#
# **Learning objectives**
#
# - explain why the format of a reply is decided at a handful of token positions, and what up-weighting them does to the gradient;
# - implement the tag-weighted loss, and justify dividing by the sum of the weights rather than by the token count;
# - parse and score reasoning replies, keeping format adherence and answer accuracy apart;
# - run an ablation over the tag weight and read format adherence and accuracy *against training steps*;
# - measure what writing out the working is worth, and what a thinking budget costs.
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

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minimind import zoo
from minimind.runtime import cpu_threads
from minimind.checks.bands import expect
from minimind.data.datasets import SFTDataset, collate_causal_lm
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import generate_replies, parse_reasoning, score_answers
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
# significant digit first, as you would on paper. The working sits in a think block; the answer,
# alone, in an answer block:

# %% tags=["nbval-check-output"]
rows = list(read_jsonl(dataset_path("reason", "train"), "sft"))
for row in rows[:2]:
    for message in row["conversations"]:
        print(f"[{message['role']}] {message['content']}")
    print()
print(f"{len(rows)} training problems; {len(world.problems('val'))} held-out problems (no (kind, a, b) shared)")

# %% [markdown]
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
# The chat model from chapter 4 has never seen a tag. Before any reasoning training, its replies to
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
# Two details matter, and upstream MiniMind2 got both wrong (see the project's upstream notes, §8.1 and §8.14):
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
    "<think>\n2+3=5, write 5. So 5.\n</think>\n<answer>5</answer>",  # the trained format
    "<answer>5</answer>",                                             # no working
    "<think>\n2+3=5\n</think>\n<answer>5",                            # answer never closed
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
# Three short fine-tuning runs from the same chat model, on the same problems in the same order,
# differing only in $\lambda \in \{1, 3, 10\}$ (the runs are `minimind.train.reason.run`, the code
# behind `python -m minimind.train.reason`, with `--tag_weight` set). Every few steps a callback
# measures, on held-out problems:
#
# - **tag confidence** — teacher-forced on the reference replies: the probability the model gives
#   the right tag at each of the four tag positions (what the weight acts on directly);
# - **content loss** — teacher-forced cross-entropy of every other reply token (what the weight
#   takes gradient away from);
# - **format adherence** — the model's own greedy replies, parsed (what a user sees).

# %%
from minimind.train.reason import ReasonConfig, run as train_reasoning

ABLATION_WEIGHTS = (1.0, 3.0, 10.0)
ABLATION_STEPS = 60
val_set = SFTDataset(dataset_path("reason", "val"), tokenizer, max_seq_len=192)
heldout = collate_causal_lm([val_set[i] for i in range(64)])
format_probe = val_problems[:30]
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


def format_adherence(model):
    replies = generate_replies(model, tokenizer, [p.prompt for p in format_probe], max_new_tokens=100)
    malformed = [reply for reply in replies if not parse_reasoning(reply)[2]]
    return score_answers(replies, [p.answer for p in format_probe]), malformed


def ablation_run(weight):
    history = {"step": [0], "tag_prob": [], "content_ce": [], "format_step": [0], "format": [], "accuracy": [],
               "malformed": {}}
    start_model = zoo.sft()
    tag_prob, content_ce = teacher_forced(start_model)
    history["tag_prob"].append(tag_prob)
    history["content_ce"].append(content_ce)
    start, _ = format_adherence(start_model)
    history["format"].append(start.format_rate)
    history["accuracy"].append(start.accuracy)

    def measure(info):
        if info.step % 5 == 0:
            tag_prob, content_ce = teacher_forced(info.model)
            history["step"].append(info.step)
            history["tag_prob"].append(tag_prob)
            history["content_ce"].append(content_ce)
        if info.step % 20 == 0:
            score, malformed = format_adherence(info.model)
            history["malformed"][info.step] = malformed
            history["format_step"].append(info.step)
            history["format"].append(score.format_rate)
            history["accuracy"].append(score.accuracy)

    config = ReasonConfig(init_from=str(zoo.path("sft")), out_dir="", max_steps=ABLATION_STEPS, tag_weight=weight,
                          progress=False, log_interval=ABLATION_STEPS)
    train_reasoning(config, callbacks=[measure])
    return history


ablation = {weight: ablation_run(weight) for weight in ABLATION_WEIGHTS}
print("step:                " + " ".join(f"{s:>5}" for s in ablation[1.0]["step"]))
for weight, history in ablation.items():
    print(f"λ={weight:>4}  P(right tag) " + " ".join(f"{p:5.2f}" for p in history["tag_prob"]))
for weight, history in ablation.items():
    print(f"λ={weight:>4}  content CE   " + " ".join(f"{c:5.2f}" for c in history["content_ce"]))
for weight, history in ablation.items():
    pairs = ", ".join(f"step {s}: {f:.0%} well formed, {a:.0%} right" for s, f, a in
                      zip(history["format_step"], history["format"], history["accuracy"]))
    print(f"λ={weight:>4}  {pairs}")
tag_prob_at_30 = [ablation[w]["tag_prob"][ablation[w]["step"].index(30)] for w in ABLATION_WEIGHTS]
content_at_10 = [ablation[w]["content_ce"][ablation[w]["step"].index(10)] for w in ABLATION_WEIGHTS]
assert tag_prob_at_30 == sorted(tag_prob_at_30) and content_at_10 == sorted(content_at_10)
assert all(history["format"][-1] >= 0.8 for history in ablation.values())
for weight, history in ablation.items():
    expect(f"reasoning.ablation.lambda_{weight:g}.tag_prob_final", history["tag_prob"][-1])
    expect(f"reasoning.ablation.lambda_{weight:g}.content_ce_final", history["content_ce"][-1])
    expect(f"reasoning.ablation.lambda_{weight:g}.format_final", history["format"][-1], n=len(format_probe))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for weight, history in ablation.items():
    axes[0].plot(history["step"], history["tag_prob"], marker="o", ms=3, label=f"λ = {weight:g}")
    axes[1].plot(history["step"], history["content_ce"], marker="o", ms=3, label=f"λ = {weight:g}")
    axes[2].plot(history["format_step"], history["format"], marker="s", label=f"λ = {weight:g}")
axes[0].set(xlabel="optimizer step", ylabel="P(right tag), teacher-forced", title="tag confidence (held out)")
axes[1].set(xlabel="optimizer step", ylabel="cross-entropy (nats)", title="content tokens (held out)")
axes[2].set(xlabel="optimizer step", ylabel="fraction well formed", title="format adherence, greedy replies")
for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Three things to read off the plots:
#
# - **The weight does what it says on the tags.** The teacher-forced probability of the right tag
#   rises faster the larger $\lambda$ — after 30 steps the ordering is strict, and $\lambda = 10$ is
#   already near certainty.
# - **It costs the content a little, early.** The gradient share taken by the tags is missing from
#   the other tokens: for the first steps the content loss is highest at $\lambda = 10$; by step 60
#   the curves have met.
# - **The format of the model's own replies is not simply faster with a larger weight.** A think
#   block can only be closed correctly once the working inside it has taken shape, so no run is
#   well formed at step 20. After that a moderate weight helps, but at $\lambda = 10$ the tags'
#   logits are pushed up so hard that they *intrude* — a `</think>` or `</answer>` in the middle of
#   the working — and format adherence lags behind the lighter weights. Here are malformed replies of
#   the $\lambda = 10$ run at step 40:

# %%
for reply in ablation[10.0]["malformed"][40][:2]:
    print(repr(reply))

# %% [markdown]
# The held-out *accuracy* of all three runs is zero or nearly so at this point; the next section
# shows why, on a model trained for longer.
#
# %% [markdown]
# ## 6. The reasoning model and its thinking
#
# The book's reasoning model is the same run carried on for longer: `python -m
# minimind.train.reason` with its defaults ($\lambda = 10$, 400 steps), built once and cached by
# `zoo.path("reasoning")`. Its loss curve, the plain cross-entropy and the tag
# cross-entropy the stage logs:

# %%
reasoning_folder = zoo.path("reasoning")
records = zoo.metrics(reasoning_folder)
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.plot([r["step"] for r in records], [r["ce"] for r in records], label="all reply tokens")
ax.plot([r["step"] for r in records], [r["tag_ce"] for r in records], label="tag tokens only")
ax.set(xlabel="optimizer step", ylabel="cross-entropy (nats)", yscale="log", title="reasoning training (λ = 10)")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %%
reasoner = zoo.load(reasoning_folder)
by_kind = {kind: [p for p in val_problems if p.kind == kind][:30] for kind in ("add2", "add3", "sub3")}
replies = {kind: generate_replies(reasoner, tokenizer, [p.prompt for p in problems], max_new_tokens=100)
           for kind, problems in by_kind.items()}


def working_result(think):
    """The number the working ends on ('So 46.', '所以是333。'), or None."""
    found = re.findall(r"(?:So|所以是)\s*(\d+)", think or "")
    return found[-1] if found else None


for kind, problems in by_kind.items():
    score = score_answers(replies[kind], [p.answer for p in problems])
    parsed = [parse_reasoning(reply) for reply in replies[kind]]
    repeats = sum(answer is not None and working_result(think) == answer.strip() for think, answer, _ in parsed)
    print(f"{kind}: {score.format_rate:.0%} well formed, {score.accuracy:.0%} right answers, "
          f"answer = the working's result in {repeats / len(parsed):.0%} ({score.n} held-out problems)")
    assert score.format_rate >= 0.9
    expect(f"reasoning.{kind}.format", score.format_rate, n=score.n)
    expect(f"reasoning.{kind}.accuracy", score.accuracy, n=score.n)
print()
for kind in ("add2", "sub3"):
    print(f"{by_kind[kind][0].prompt}\n{replies[kind][0]}\n(reference: {by_kind[kind][0].answer})\n")

# %% [markdown]
# The replies have the trained form — the working, column by column, then the answer — but the
# answer repeats the result the working ends on in only part of them (the last figure of each line
# above): even copying a number from its own working is not yet reliable. Whether the answer is
# *right* is another matter. To see where
# the model goes wrong, feed it the reference reply (teacher forcing) and mark every token where
# its most likely next token differs from the reference, as `[reference/predicted]`:

# %%
@torch.no_grad()
def error_map(model, problem):
    ids, mask = tokenizer.render_conversation(problem.conversation())
    ids = torch.tensor([ids])
    predicted = model(ids).logits[0, :-1].argmax(-1).tolist()
    pieces = []
    for position in range(1, ids.size(1)):
        if not mask[position]:
            continue
        want, got = ids[0, position].item(), predicted[position - 1]
        pieces.append(tokenizer.decode([want]) if want == got else f"[{tokenizer.decode([want])}/{tokenizer.decode([got])}]")
    return "".join(pieces).replace("\n", "⏎")


english = [p for p in val_problems if p.lang == "en"]
for problem in (next(p for p in english if p.kind == "add2"), next(p for p in english if p.kind == "add3")):
    print(problem.prompt)
    print("  ", error_map(reasoner, problem))

digit_ids = torch.tensor(tokenizer.encode("0123456789"))
val_batch = collate_causal_lm([val_set[i] for i in range(90)])
with torch.no_grad():
    predicted = reasoner(val_batch["input_ids"]).logits[:, :-1].argmax(-1)
targets = val_batch["labels"][:, 1:]
is_digit = torch.isin(targets, digit_ids)
is_text = (targets != -100) & ~is_digit
digit_accuracy = (predicted == targets)[is_digit].float().mean().item()
text_accuracy = (predicted == targets)[is_text].float().mean().item()
print(f"\nteacher-forced accuracy on held-out replies: digits {digit_accuracy:.0%}, every other token {text_accuracy:.0%}")
assert digit_accuracy < 0.9 < text_accuracy
expect("reasoning.teacher_forced.digit_accuracy", digit_accuracy, n=int(is_digit.sum()))

# %% [markdown]
# The pattern is the lesson of this section: the model has learned the *procedure* — the words,
# the order of the steps, the carries, that the sum of the digits it wrote is what follows `=`,
# often that the answer repeats the working's result — but not yet to *read* the operands: the errors sit
# on the digits copied out of the question. Fetching the $i$-th digit of a number mentioned earlier
# in a sentence is a precise attention pattern that a 1M-parameter model needs many more steps to
# learn than the few minutes this chapter spends. So on a CPU budget this model is a faithful
# demonstration of the *format* and a poor calculator; its held-out accuracy above is what it is,
# and the book reports it rather than hiding it. (Chapter 3 saw the same thing for facts: the form
# is learned early, the content late and in a jump.)
#
# ## 7. A thinking budget
#
# At inference the length of the thinking can be capped: render the prompt with the think block
# already opened (`enable_thinking=True` appends `<think>`), count the tokens generated inside it,
# and once the budget is spent force `</think>` — the model then has to answer with whatever it has.
# `SamplingParams(thinking_budget=…)` in `minimind.generate` does this (the same trick that
# "budget forcing" uses to make large models think *less* — or, by suppressing `</think>` and appending
# "Wait", longer).

# %%
budget_problems = by_kind["add2"] + by_kind["add3"]
budgets = (0, 8, 16, 32, None)
budget_scores = {}
for budget in budgets:
    budget_replies = generate_replies(reasoner, tokenizer, [p.prompt for p in budget_problems], max_new_tokens=100,
                                      open_thinking=True, thinking_budget=budget)
    budget_scores[budget] = score_answers(budget_replies, [p.answer for p in budget_problems])
    think_tokens = [len(tokenizer.encode(parse_reasoning(r)[0] or "")) for r in budget_replies]
    label = "no limit" if budget is None else f"{budget:>3} tokens"
    print(f"budget {label:>10}: mean thinking {sum(think_tokens) / len(think_tokens):5.1f} tokens, "
          f"{budget_scores[budget].format_rate:.0%} well formed, {budget_scores[budget].accuracy:.0%} right")
    if budget == 8:
        print(f"   e.g. {budget_replies[0]!r}")
assert budget_scores[None].format_rate > max(budget_scores[b].format_rate for b in (0, 8, 16))
for budget, score in budget_scores.items():
    expect(f"reasoning.budget_{budget}.format", score.format_rate, n=score.n)

# %% [markdown]
# A budget large enough for the whole working changes nothing. A tight one breaks the *format*:
# the forced `</think>` arrives in the middle of a step, and the model — which has only ever seen
# complete think blocks — carries on with its working after it and closes the block a second time.
# Cutting the thinking short works with models that have learned to answer from a partial line of
# reasoning; this one has only ever seen complete working, and a tag it was forced to write is not
# a tag it understands. (Accuracy stays near zero throughout, for the reason of
# section 6.)

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
# ```{exercise} Train it longer
# :label: ex-07-longer
# Section 6 blamed the wrong answers on too little training. Test that: continue training the
# reasoning model with `run(dataclasses.replace(zoo_config(), init_from=str(reasoning_folder),
# out_dir="", max_steps=1000, lr=1e-3), callbacks=[...])` (from `minimind.train.reason`), with a
# callback that, every 200 steps, scores the greedy replies to the held-out problems of each kind
# (`generate_replies`, `score_answers`, as in section 6). Plot accuracy per kind against the steps.
# Which kind is learned first, and why? (Single-threaded, 1000 steps take about 15 minutes.)
# ```
#
# ```{solution} ex-07-longer
# :class: dropdown
# Accuracy rises steadily with the extra steps while the format stays intact throughout. Two-digit
# sums come first, well ahead of the others, because they need the
# fewest digits fetched from the question and at most one carry; three-digit sums and subtractions
# (with borrows) follow far more slowly, close to each other. The model was not missing a skill
# the format cannot teach; it was missing steps.
# ```
#
# ```{exercise} What is the thinking worth?
# :label: ex-07-direct
# Build a second training set from `world.problems("train")` in which the assistant answers with
# `<answer>…</answer>` only — no working — and fine-tune the chat model on it for as many steps as
# the reasoning model (use `SFTDataset` on a jsonl you write with `minimind.data.jsonl`). Compare
# the held-out accuracy per kind with the reasoning model's at the same step count. Before you run
# it: which do you expect to win on three-digit sums, and why?
# ```
#
# ```{solution} ex-07-direct
# :class: dropdown
# The direct model must produce every digit of the answer in one step from the question: for the
# first (most significant) digit it has to compute all the carries at once, inside the network.
# The reasoning model writes the column sums one at a time, so each token depends on two digits
# and a carry it has just written — a much easier function per position — at the price of more
# tokens to generate. Expect the direct model to learn the units digit quickly and the leading
# digits slowly, and the gap in its favour to shrink or reverse as the numbers get longer; at this
# tiny scale both need many more steps than the chapter spends, so run long enough that at least
# one of them gets two-digit sums mostly right before drawing a conclusion.
# ```
#
# ## Summary
#
# - A reasoning reply is `<think>…</think><answer>…</answer>`; whether a parser can read it is
#   decided at four positions, and the book's tokenizer makes each tag a single token.
# - The tag-weighted loss multiplies the cross-entropy of those targets by $\lambda$. Here it is a
#   weighted *mean* (divided by the sum of the weights): equal to SFT at $\lambda = 1$, on the same
#   scale for every $\lambda$. Upstream divided by the token count and weighted sub-words.
# - Measured on held-out problems: a larger $\lambda$ makes the model sure of the tags sooner and
#   costs the content a little early on; the format of its *own* replies follows only once the
#   working has taken shape, fastest with a moderate weight — at $\lambda = 10$ tags intrude into
#   the working for a while.
# - Format and correctness are separate: the reasoning model writes well-formed working, still
#   misreads the operands' digits and does not always copy its own result into the answer; at this
#   scale and budget its accuracy is near zero.
# - A thinking budget closes the think block by force; a model never trained on truncated thoughts
#   carries on thinking after the forced tag and breaks the format.
#
# ## Further reading
#
# - Writing out intermediate steps: scratchpads {cite}`nye2021scratchpad` and chain-of-thought
#   prompting {cite}`wei2022cot`.
# - Reasoning trained with reinforcement learning, and the `<think>` format: {cite}`deepseek2025r1`.
# - Controlling the length of the thinking at inference ("budget forcing"): {cite}`muennighoff2025s1`.
# - Upstream MiniMind, whose reasoning stage this chapter rebuilds: {cite}`gong2024minimind`.
