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
# # Chapter 9 — Knowledge distillation: a small model taught by a larger one
#
# A hard label says only which token came next. A trained model's prediction says much more: which
# other tokens were plausible, and how plausible. Knowledge distillation trains a small *student*
# to match a larger *teacher*'s whole predicted distribution, softened by a temperature, alongside
# (or instead of) the hard labels. This chapter builds the distillation loss upstream MiniMind
# uses, derives why it carries a factor $T^2$, and then measures, on the book's data, whether a
# student taught by a teacher beats the same student trained on the labels alone — on held-out
# loss and on the tasks — and how the temperature changes that.
#
# **Learning objectives**
#
# - explain soft labels and what the temperature does to them (and to their entropy);
# - derive the gradient of the temperature-softened KL term and why it is multiplied by $T^2$;
# - implement $\alpha\,\mathrm{CE} + (1-\alpha)\,T^2\,\mathrm{KL}(p_\text{teacher}\,\|\,p_\text{student})$ on the supervised tokens and check it against `minimind`;
# - run a controlled comparison: the same student, the same steps and data, with and without a teacher;
# - read a temperature sweep, and tell forward from reverse KL.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import dataclasses
import math
import random

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minimind import zoo
from minimind.runtime import cpu_threads
from minimind.checks.bands import expect
from minimind.data.datasets import SFTDataset, collate_causal_lm
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import generate_replies, is_correct, score_answers
from minimind.losses import distillation_loss, masked_cross_entropy

# Every core (MINIMIND_THREADS overrides it; `make test` runs one chapter per core on one thread each).
# Figures that float rounding moves differ a little on another CPU or thread count, so the chapter
# asserts them against bands measured across seeds and kernel paths (minimind.checks.bands).
torch.set_num_threads(cpu_threads())
torch.manual_seed(0)
random.seed(0)
tokenizer = zoo.tokenizer()
world = build_world(seed=0)

# %% [markdown]
# ## 1. Soft labels and temperature
#
# The teacher of this chapter is the book's chat model fine-tuned on the distillation set (a mix of
# everything the earlier chapters trained on: fact questions, descriptions of people, arithmetic
# with working, greetings), built once by `zoo.path("distill_teacher")`. Ask it a question
# and look at its distribution over the *first token of the answer*, at three temperatures:
#
# $$ p_i^{(T)} = \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)} $$
#
# where $z$ are the logits. $T = 1$ is the model's own distribution; a larger $T$ flattens it and
# lifts the tokens the model thought *possible* — the part of its knowledge a hard label throws away.

# %%
teacher_folder = zoo.path("distill_teacher")
teacher = zoo.load(teacher_folder)
question = world.questions("sft", "train", "en")[0]
prompt_ids = tokenizer.encode_chat_prompt([{"role": "user", "content": question.prompt}])
with torch.no_grad():
    answer_logits = teacher(torch.tensor([prompt_ids])).logits[0, -1]
print(f"{question.prompt}  (reference: {question.answer})")
for temperature in (1.0, 2.0, 4.0):
    probs = torch.softmax(answer_logits / temperature, dim=-1)
    top = torch.topk(probs, 6)
    shown = ", ".join(f"{tokenizer.decode([i])!r} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
    print(f"T = {temperature:g}: {shown}")

# %% [markdown]
# At $T = 1$ the teacher is almost sure of the first digit; at $T = 2$ the ranking of its other
# guesses becomes visible — which digits it considers possible for an age, in which order — the
# information a hard label throws away. At $T = 4$ the distribution is already nearly flat: with a
# vocabulary of 2048 tokens, the long tail of unlikely tokens soaks up the mass. Averaged over every
# supervised position of a batch of held-out conversations, the entropy of the softened distribution
# grows steadily with $T$ and approaches the uniform distribution's $\ln 2048 \approx 7.6$ nats
# quickly — a first hint that large temperatures will wash the signal out:

# %%
val_set = SFTDataset(dataset_path("distill", "val"), tokenizer, max_seq_len=192)
val_batch = collate_causal_lm([val_set[i] for i in range(64)])
supervised = val_batch["labels"][:, 1:] != -100
with torch.no_grad():
    teacher_val_logits = teacher(val_batch["input_ids"]).logits[:, :-1][supervised]  # (N, V)
temperatures = [0.5, 1, 1.5, 2, 3, 4, 6, 8]
entropies = []
for temperature in temperatures:
    log_p = F.log_softmax(teacher_val_logits / temperature, dim=-1)
    entropies.append(-(log_p.exp() * log_p).sum(-1).mean().item())
print("  ".join(f"T={t:g}: {h:.2f}" for t, h in zip(temperatures, entropies)))
assert all(a < b for a, b in zip(entropies, entropies[1:]))
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(temperatures, entropies, marker="o")
ax.axhline(math.log(tokenizer.vocab_size), color="grey", ls="--", label="uniform")
ax.set(xlabel="temperature T", ylabel="mean entropy (nats)", title="the teacher's softened predictions")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## 2. The loss, and why it carries $T^2$
#
# With student logits $s$, teacher logits $t$, the softened distributions $q^{(T)} = \mathrm{softmax}(s/T)$
# (student) and $p^{(T)} = \mathrm{softmax}(t/T)$ (teacher), and the set $M$ of supervised target
# positions, upstream MiniMind's distillation loss is
#
# $$
# \mathcal{L} = \alpha\,\underbrace{\frac{1}{|M|}\sum_{m \in M} -\log q^{(1)}_{m, y_m}}_{\text{cross-entropy with the labels}}
#   \;+\; (1 - \alpha)\, T^2\, \underbrace{\frac{1}{|M|}\sum_{m \in M} \sum_i p^{(T)}_{m,i} \log \frac{p^{(T)}_{m,i}}{q^{(T)}_{m,i}}}_{\mathrm{KL}(p^{(T)} \,\|\, q^{(T)})}.
# $$
#
# Why $T^2$? Differentiate the KL term for one position with respect to a student logit:
#
# $$
# \frac{\partial\, \mathrm{KL}}{\partial s_i} = \frac{1}{T}\left(q^{(T)}_i - p^{(T)}_i\right).
# $$
#
# For large $T$, $\mathrm{softmax}(z/T)_i \approx \frac{1}{V}\left(1 + \frac{z_i - \bar z}{T}\right)$, so
# $q^{(T)}_i - p^{(T)}_i \approx \frac{(s_i - \bar s) - (t_i - \bar t)}{V\,T}$ and the gradient is
# $\approx \frac{(s_i - \bar s) - (t_i - \bar t)}{V\,T^2}$: it shrinks like $1/T^2$. Multiplying by
# $T^2$ keeps the soft term's gradient on the same scale whatever the temperature (so $\alpha$ keeps
# its meaning), and in the limit it becomes matching of centred logits, divided by $V$ {cite}`hinton2015distilling`.
# Checked numerically on the teacher and an untrained copy's logits:

# %%
from minimind.train.distill import student_from_teacher

untrained = student_from_teacher(teacher, [0, 2])  # a shallower copy of the teacher (section 4)
with torch.no_grad():
    student_val_logits = untrained(val_batch["input_ids"]).logits
    teacher_logits = teacher(val_batch["input_ids"]).logits
grad_temperatures = [1, 2, 4, 8, 16, 32]
with_factor, without_factor = [], []
for temperature in grad_temperatures:
    for scaled, out in ((True, with_factor), (False, without_factor)):
        logits = student_val_logits.clone().requires_grad_(True)
        loss, _ = distillation_loss(logits, teacher_logits, val_batch["labels"], alpha=0.0, temperature=temperature)
        (grad,) = torch.autograd.grad(loss if scaled else loss / temperature**2, logits)
        out.append(grad.norm().item())
for temperature, a, b in zip(grad_temperatures, with_factor, without_factor):
    print(f"T = {temperature:>2}: gradient norm with T² {a:.2e}, without {b:.2e}")
# in the large-T regime (T = 16 → 32) the scaled gradient settles, the unscaled one keeps falling by T² = 4
assert with_factor[-2] / with_factor[-1] < 1.3 and without_factor[-2] / without_factor[-1] > 3.5
assert (without_factor[0] / without_factor[-1]) / (with_factor[0] / with_factor[-1]) > 100
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.loglog(grad_temperatures, with_factor, marker="o", label="T² · KL")
ax.loglog(grad_temperatures, without_factor, marker="s", label="KL alone")
ax.set(xlabel="temperature T", ylabel="gradient norm", title="the soft term's gradient")
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()

# %% [markdown]
# The approximation needs $T$ larger than the spread of the logits, and a confident teacher's logits
# span tens of nats: up to $T \approx 8$ the scaled gradient still changes (the softened
# distributions themselves change shape there), by $T = 16$ it has settled, while the unscaled
# gradient keeps falling by the predicted factor 4 per doubling — over the whole range it shrinks
# thousands of times more.
#
# Forward KL, $\mathrm{KL}(p\,\|\,q)$, is what upstream uses: wherever the teacher puts mass the
# student must too ("mean-seeking"). Reverse KL, $\mathrm{KL}(q\,\|\,p)$, punishes the student for
# putting mass where the teacher has none and lets it drop some of the teacher's modes
# ("mode-seeking"); MiniLLM argues for it when a small student cannot cover a large teacher
# {cite}`gu2024minillm`. `distillation_loss(..., reverse=True)` and `--reverse_kl` select it.
#
# ## 3. The loss, built in the notebook

# %%
def my_distillation_loss(student_logits, teacher_logits, labels, alpha, temperature, reverse=False):
    """alpha·CE + (1 − alpha)·T²·KL on the supervised targets (labels unshifted, -100 ignored)."""
    mask = labels[:, 1:] != -100
    s = student_logits[:, :-1][mask]                      # (N, V): positions that predict a supervised token
    t = teacher_logits[:, :-1][mask].detach()
    ce = F.cross_entropy(s, labels[:, 1:][mask])
    log_q, log_p = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    if reverse:
        kl = (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    else:
        kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    return alpha * ce + (1 - alpha) * temperature**2 * kl


for alpha, temperature, reverse in [(1.0, 1.0, False), (0.5, 2.0, False), (0.0, 4.0, False), (0.3, 2.0, True)]:
    ours = my_distillation_loss(student_val_logits, teacher_logits, val_batch["labels"], alpha, temperature, reverse)
    theirs, parts = distillation_loss(student_val_logits, teacher_logits, val_batch["labels"], alpha, temperature,
                                      reverse=reverse)
    assert torch.allclose(ours, theirs, atol=1e-5)
    print(f"α={alpha}, T={temperature}, {'reverse' if reverse else 'forward'} KL: loss {theirs:.4f} "
          f"(CE {parts['ce']:.4f}, KL {parts['kl']:.4f})")
same, parts = distillation_loss(teacher_logits, teacher_logits, val_batch["labels"], 0.5, 2.0)
assert parts["kl"].abs() < 1e-6
assert torch.allclose(distillation_loss(student_val_logits, teacher_logits, val_batch["labels"], 1.0, 3.0)[0],
                      masked_cross_entropy(student_val_logits, val_batch["labels"]))
print("✓ the notebook's loss equals minimind.losses.distillation_loss; KL(p‖p) = 0; α = 1 is cross-entropy")

# %% [markdown]
# ## 4. Teacher and student
#
# The student keeps the teacher's width and vocabulary but only two of its four transformer blocks,
# the first and the third, and starts from the teacher's weights for them — the way DistilBERT
# initialises its student from every other layer of BERT. `student_from_teacher(teacher, [0, 2])`
# builds it; `python -m minimind.train.distill --student_layers 0,2` does the same from the command
# line (students of another width, built fresh with `--preset`/`--model_overrides`, work too; the
# only requirement is the vocabulary). Cut down like this, the student has lost much of what the
# teacher could do, and training has to bring it back.
#
# What we measure, on data neither model trains on here:
#
# - **held-out loss** — cross-entropy on the distillation set's validation split (`distill_val`),
#   and on fact questions about the people the teacher knows from SFT but that no distillation
#   conversation asks ("unseen questions");
# - **task score** — exact match of the greedy answers to those unseen questions.

# %%
from minimind.data.jsonl import read_jsonl

transfer_prompts = {row["conversations"][-2]["content"] for row in read_jsonl(dataset_path("distill", "train"), "sft")}
unseen = [q for q in world.questions("sft", "train") if q.prompt not in transfer_prompts]
unseen = random.Random(0).sample(unseen, 150)
unseen_set = [{"input_ids": torch.tensor(ids), "labels": torch.where(torch.tensor(mask, dtype=torch.bool),
                                                                      torch.tensor(ids), -100)}
              for ids, mask in (tokenizer.render_conversation(q.conversation()) for q in unseen)]


@torch.no_grad()
def held_out_loss(model, examples):
    was_training = model.training
    model.eval()
    total = count = 0
    for start in range(0, len(examples), 100):
        batch = collate_causal_lm([examples[i] for i in range(start, min(start + 100, len(examples)))])
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += masked_cross_entropy(model(batch["input_ids"]).logits, batch["labels"]).item() * n
        count += n
    model.train(was_training)
    return total / count


def unseen_exact_match(model):
    replies = generate_replies(model, tokenizer, [q.prompt for q in unseen], max_new_tokens=10)
    return sum(is_correct(reply, q.answer) for reply, q in zip(replies, unseen)) / len(unseen)


def evaluate(model):
    return {"val_loss": held_out_loss(model, val_set), "unseen_loss": held_out_loss(model, unseen_set),
            "unseen_em": unseen_exact_match(model)}


def show(name, scores, key):
    print(f"{name:<28} held-out loss: distill_val {scores['val_loss']:.4f}, unseen questions "
          f"{scores['unseen_loss']:.4f};  unseen exact match {scores['unseen_em']:.1%}")
    for figure, value in scores.items():  # each asserted against its band, measured across seeds and CPUs
        expect(f"distill.{key}.{figure}", value, n=len(unseen) if figure == "unseen_em" else None)


print(f"teacher: {teacher.num_parameters() / 1e6:.2f}M parameters, {teacher.config.num_hidden_layers} layers; "
      f"student: {untrained.num_parameters() / 1e6:.2f}M parameters, {untrained.config.num_hidden_layers} layers")
reference = {"teacher": evaluate(teacher), "student at start": evaluate(untrained)}
for name, scores in reference.items():
    show(name, scores, name.split()[0])

# %% [markdown]
# ## 5. With a teacher, and without
#
# Distillation earns its keep when labelled data are scarce — the situation of a small student
# trained on a narrow task. The transfer set here is the first 200 conversations of the
# distillation set, and both students take 100 optimizer steps of 32 conversations on it (16
# passes): same start, same data, same order, same learning rate. One is trained on the hard labels
# only ($\alpha = 1$: plain SFT), the other with $\alpha = 0.5$, $T = 2$. A callback records the
# held-out loss as training goes.

# %%
from minimind.train.distill import DistillConfig, run as distil

TRANSFER_ROWS, STEPS = 200, 100


def train_student(alpha, temperature):
    curve = {"step": [0], "val_loss": [reference["student at start"]["val_loss"]]}

    def track(info):
        if info.step % 20 == 0:
            curve["step"].append(info.step)
            curve["val_loss"].append(held_out_loss(info.model, val_set))

    config = DistillConfig(out_dir="", max_rows=TRANSFER_ROWS, max_steps=STEPS, alpha=alpha, temperature=temperature,
                           progress=False, log_interval=STEPS)
    result = distil(config, teacher=teacher, model=student_from_teacher(teacher, [0, 2]), callbacks=[track])
    return evaluate(result.model), curve, result.records


hard, hard_curve, hard_records = train_student(alpha=1.0, temperature=1.0)
soft, soft_curve, soft_records = train_student(alpha=0.5, temperature=2.0)
show("hard labels only (α = 1)", hard, "hard")
show("distilled (α = 0.5, T = 2)", soft, "soft")
assert soft["unseen_loss"] < hard["unseen_loss"], "soft labels carry what the teacher knew beyond the transfer set"

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].plot(hard_curve["step"], hard_curve["val_loss"], marker="o", label="hard labels only")
axes[0].plot(soft_curve["step"], soft_curve["val_loss"], marker="o", label="distilled (α = 0.5, T = 2)")
axes[0].axhline(reference["teacher"]["val_loss"], color="grey", ls="--", label="teacher")
axes[0].set(xlabel="optimizer step", ylabel="cross-entropy (nats)", title="held-out loss (distill_val)")
names = ["teacher", "student at start", "hard labels", "distilled"]
values = [reference["teacher"]["unseen_em"], reference["student at start"]["unseen_em"], hard["unseen_em"], soft["unseen_em"]]
axes[1].bar(names, values, color=["grey", "lightgrey", "C0", "C1"])
axes[1].set(ylabel="exact match", title="unseen fact questions", ylim=(0, 1))
for ax in axes:
    ax.grid(alpha=0.3, axis="y")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The student trained on hard labels fits its 200 conversations ever better and drifts away from
# what the teacher knew beyond them: on the questions outside the transfer set its loss ends higher
# than the distilled student's. The distilled student is pulled, at every supervised position,
# towards the teacher's whole distribution — a far richer target than one token — and keeps more of
# the teacher's behaviour there. On `distill_val`, conversations like the transfer set's, the two
# are close, and which is lower changes from run to run. The exact-match difference on 150 unseen
# questions moves from run to run too — a few points in the stored run, about twelve in the other
# two runs of the bands file — so the loss is the measurement to read here.  Soft labels are
# expected to matter most when hard ones are few; the exercise "When labels are plentiful" measures
# the gap with the full 1,500-conversation set.
#
# ## 6. The temperature
#
# The same distillation run at three temperatures ($\alpha = 0.5$):

# %%
sweep = {2.0: soft}
for temperature in (1.0, 4.0):
    sweep[temperature] = train_student(alpha=0.5, temperature=temperature)[0]
sweep = dict(sorted(sweep.items()))
for temperature, scores in sweep.items():
    show(f"T = {temperature:g}", scores, f"T_{temperature:g}")
assert all(scores["unseen_loss"] < hard["unseen_loss"] for scores in sweep.values())

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
ts = list(sweep)
axes[0].plot(ts, [sweep[t]["val_loss"] for t in ts], marker="o", label="distill_val")
axes[0].plot(ts, [sweep[t]["unseen_loss"] for t in ts], marker="s", label="unseen questions")
axes[0].axhline(hard["val_loss"], color="C0", ls=":", label="hard labels: distill_val")
axes[0].axhline(hard["unseen_loss"], color="C1", ls=":", label="hard labels: unseen")
axes[0].set(xscale="log", xlabel="temperature T", ylabel="held-out cross-entropy (nats)", title="held-out loss")
axes[1].plot(ts, [sweep[t]["unseen_em"] for t in ts], marker="o", color="C2", label="distilled")
axes[1].axhline(hard["unseen_em"], color="C2", ls=":", label="hard labels")
axes[1].set(xscale="log", xlabel="temperature T", ylabel="exact match", title="unseen fact questions")
for ax in axes:
    ax.set_xticks(ts, [f"{t:g}" for t in ts])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Every temperature beats the hard labels on the unseen questions (asserted). Which temperature is
# best — on them, and on the distillation set's own held-out conversations — changes from run to
# run by less than the spread the bands file records, so no ordering is claimed. At $T = 1$ the
# teacher's distributions are nearly one-hot (section 1) and say little more
# than the labels; at large $T$ the long tail of the vocabulary flattens them towards uniform and
# the signal thins out again (the $T^2$ factor keeps the gradient's *size*, not its information).
# Upstream MiniMind uses $T = 1.5$; on a larger vocabulary the tail is longer still, which argues
# for modest temperatures.

# %% [markdown]
# ## Exercises
#
# ```{exercise} Forward or reverse?
# :label: ex-08-direction
# A teacher predicts the next token as "cat" with probability 0.5 and "dog" with 0.5. A student can
# only put its mass on one of them (say 0.98 on one, the rest spread thin). Which of
# $\mathrm{KL}(p\,\|\,q)$ and $\mathrm{KL}(q\,\|\,p)$ is smaller for that student, and which student
# would each one prefer among "0.98 on cat" and "0.5 / 0.5"? Relate the answer to a small student
# distilled from a large teacher.
# ```
#
# ```{solution} ex-08-direction
# :class: dropdown
# Forward KL $\sum_i p_i \log(p_i/q_i)$ is dominated by the token the student neglects: with
# $q_\text{dog} \approx 0.01$ the term $0.5 \log(0.5/0.01) \approx 2$ nats makes it large, so
# forward KL prefers the 0.5/0.5 student (zero). Reverse KL $\sum_i q_i \log(q_i/p_i)$ only looks
# where the student puts mass: $0.98 \log(0.98/0.5) \approx 0.66$ nats, and it is also minimised by
# 0.5/0.5, but it tolerates dropping a mode far more than forward KL does. When a small student
# cannot represent all of a large teacher's modes, forward KL makes it smear mass over all of them
# (including between them), reverse KL lets it commit to some — the argument of MiniLLM.
# ```
#
# ```{exercise} Soft targets
# :label: ex-08-soft
# Write `my_soft_targets(logits, temperature)` returning the softened distribution over the last
# axis, and check it with `minimind.checks.distill.check_soft_targets`.
# ```
#
# ```{solution} ex-08-soft
# :class: dropdown
# `torch.softmax(logits / temperature, dim=-1)`; the cell below passes it to the check.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.distill import check_distillation_loss, check_soft_targets

check_soft_targets(lambda logits, temperature: torch.softmax(logits / temperature, dim=-1))

# %% [markdown]
# ```{exercise} The distillation loss
# :label: ex-08-loss
# Without looking at section 3, write `my_loss(student_logits, teacher_logits, labels, alpha,
# temperature)` and check it with `minimind.checks.distill.check_distillation_loss(my_loss)`. Which
# mistake does the check's hint about $T^2$ catch?
# ```
#
# ```{solution} ex-08-loss
# :class: dropdown
# `my_distillation_loss` from section 3 passes (the cell below). Leaving out $T^2$ gives the right
# value only at $T = 1$; averaging the KL over *all* positions instead of the supervised ones, or
# summing instead of averaging over tokens, gives the wrong value for every $\alpha < 1$.
# ```

# %% tags=["nbval-check-output"]
check_distillation_loss(my_distillation_loss)

# %% [markdown]
# ```{exercise} When labels are plentiful
# :label: ex-08-full-data
# Re-run section 5 with `TRANSFER_ROWS = 0` (all 1,500 conversations, about 2 passes in 100
# steps). How large is the gap between the two students now? Then try `alpha=0.1` (almost only the
# teacher) and, with `DistillConfig(..., reverse_kl=True)`, reverse KL on the 200-conversation set.
# Explain what you see.
# ```
#
# ```{solution} ex-08-full-data
# :class: dropdown
# With 7.5 times more labelled conversations and two passes instead of sixteen, the hard-label
# student no longer overfits, and expect the two students to end close together — measure how close,
# on held-out loss and on exact match, against the gap section 5 printed. Distillation
# is a regulariser and a carrier of knowledge the labels lack; when the labels already carry enough
# and the student does not overfit, there is little for it to add. With $\alpha = 0.1$ the student
# learns almost only from the teacher: expect it to end near $\alpha = 0.5$, because the teacher is right on nearly every training
# label, so the hard labels add little that the soft ones lack. For
# reverse KL, expect a result close to forward KL: the teacher's distributions here are mostly
# peaked, and the two directions differ most on flat, many-moded ones — check it.
# ```
#
# ```{exercise} A narrower student
# :label: ex-08-narrow
# Replace the student with a fresh, narrower model: `MiniMind(get_config("book", hidden_size=64,
# num_hidden_layers=2))` (0.2M parameters, no teacher weights), trained on the full distillation
# set for 300 steps with `lr=3e-3`, with and without the teacher. Does distillation still help its
# held-out loss? Look at the teacher's own held-out loss in section 4 for the reason.
# ```
#
# ```{solution} ex-08-narrow
# :class: dropdown
# It does not, on `distill_val`: a student trained from scratch on 1,500 conversations stays unsure
# about every fact it could not learn, and a cross-entropy rewards that caution on questions nobody
# could answer from the training data (held-out people, new wordings). The teacher is *confidently*
# wrong on many of those, and the distilled student inherits that confidence, so its held-out loss
# ends above the hard-label student's. Distillation transfers what the teacher believes, its
# mistakes included; it helps when the teacher's beliefs are better than what the student can get
# from the labels — as for the cut-down student above, which started from the teacher's own weights.
# ```
#
# ## Summary
#
# - A trained model's softened distribution says which other tokens were plausible; the temperature
#   $T$ controls how much of that a soft label shows (the entropy rises steadily with $T$).
# - The distillation loss is $\alpha\,\mathrm{CE} + (1-\alpha)\,T^2\,\mathrm{KL}(p_\text{teacher}\,\|\,p_\text{student})$
#   on the supervised tokens; the soft term's gradient shrinks like $1/T^2$, and the $T^2$ puts it
#   back on a temperature-independent scale.
# - With 200 labelled conversations, a student made of half the teacher's layers and trained with
#   the teacher ends with a clearly lower loss on questions outside the transfer set than the same
#   student on hard labels alone, at every temperature tried; on 150 unseen questions its exact-match
#   gain is a few points, within the interval of such a count.
# - Distillation passes on the teacher's beliefs, mistakes included: it pays when the teacher knows
#   more than the labels can teach, and little when labels are plentiful.
#
# ## Further reading
#
# - Soft targets, temperature and the $T^2$ factor: {cite}`hinton2015distilling`; matching logits: {cite}`ba2014deep`.
# - Distillation for sequence models, at the sequence level: {cite}`kim2016sequence`.
# - Reverse KL for language models: {cite}`gu2024minillm`; distilling on the student's own samples: {cite}`agarwal2024gkd`.
# - Upstream MiniMind's distillation stage: {cite}`gong2024minimind`.
