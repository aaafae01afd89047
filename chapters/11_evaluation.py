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
# # Chapter 11 — Evaluation: measuring a small model honestly
#
# Every chapter so far ended with a number: a loss, an exact-match share, a preference accuracy.
# This chapter is about those numbers themselves — what each measures, how the same model can
# score very differently depending on how it is asked, how many items a claimed difference needs,
# and how to tell whether a test set leaked into the training data. It also connects the book's
# models to the tool the field uses to report scores, the lm-evaluation-harness, through which
# upstream MiniMind's C-Eval and CMMLU numbers are computed.
#
# **Learning objectives**
#
# - explain why perplexity depends on the tokenizer and bits per byte does not, and compute both;
# - score the same answers strictly and normalised, and say what each number claims;
# - score a base model by log-likelihood over choices (how C-Eval-style benchmarks score it) and by generation, and explain the gap;
# - put a 95% interval on a share, and compute how many items a claimed difference needs;
# - measure contamination as n-gram overlap between a test set and a training corpus;
# - judge free-text replies against ground truth without a language model;
# - run an lm-evaluation-harness task on a book model, and check it against the chapter's own computation.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import json
import math
import random
import re
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minimind import zoo
from minimind.checks.bands import expect
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import ATTRIBUTES, DESCRIBE_PROMPTS, build_world, dataset_path
from minimind.eval import answer_questions, bits_per_byte, is_correct, normalize_reply, wilson_interval
from minimind.runtime import cpu_threads
from minimind.tokenizer import BOS_ID

# Every core (MINIMIND_THREADS overrides it); figures float rounding moves are asserted against measured bands.
torch.set_num_threads(cpu_threads())
torch.manual_seed(0)
tokenizer = zoo.tokenizer()
world = build_world(seed=0)
pretrained, sft = zoo.pretrained(), zoo.sft()
print(world)

# %% [markdown]
# ## 1. Perplexity and bits per byte
#
# A language model's loss on a text is its mean negative log-likelihood per *token*,
# $\bar\ell = -\frac{1}{N}\sum_t \log p(x_t \mid x_{<t})$, and its perplexity is $e^{\bar\ell}$. Both
# depend on what a token is. A tokenizer that cuts the same text into fewer, longer tokens makes
# each prediction harder and the per-token loss larger, without the model being any worse: the
# total information is the same, spread over fewer predictions. To compare models with different
# tokenizers, divide the *total* negative log-likelihood, in bits, by the number of *bytes* of
# the text:
#
# $$ \text{bits per byte} = \frac{-\sum_t \log_2 p(x_t \mid x_{<t})}{\text{UTF-8 bytes of the text}}. $$
#
# `minimind.eval.bits_per_byte` computes it (each document scored on its own, long ones in
# overlapping windows). On the held-out pretraining text, split by language:

# %%
validation = [row["text"] for row in read_jsonl(dataset_path("pretrain", "val"), "pretrain")]
by_language = {"en": [t for t in validation if not re.search(r"[\u4e00-\u9fff]", t)],
               "zh": [t for t in validation if re.search(r"[\u4e00-\u9fff]", t)]}
print(f"{'':>3} {'documents':>9} {'tokens':>8} {'bytes':>8} {'nats/token':>10} {'perplexity':>10} {'bits/byte':>9}")
measured = {}
for lang, documents in by_language.items():
    result = bits_per_byte(pretrained, tokenizer, documents)
    nats_per_token = result.bits * math.log(2) / result.tokens
    measured[lang] = (nats_per_token, result.bits_per_byte)
    print(f"{lang:>3} {result.documents:>9} {result.tokens:>8,} {result.bytes:>8,} {nats_per_token:>10.3f} "
          f"{math.exp(nats_per_token):>10.2f} {result.bits_per_byte:>9.3f}")
    expect(f"evaluation.bits_per_byte.{lang}", result.bits_per_byte)
    expect(f"evaluation.nats_per_token.{lang}", nats_per_token)

# %% [markdown]
# The per-token loss and the bits per byte rank the two languages differently whenever a token
# carries a different number of bytes in each: a Chinese character is three bytes and one token
# here, an English token several one-byte letters. Bits per byte is the number to compare across
# tokenizers, languages and models (upstream's 6400-token tokenizer and ours, for instance); a
# perplexity is only comparable between models that share a tokenizer. The same figure, on the
# whole pretraining validation file, is one command: `minimind eval --model pretrained --bpb data/pretrain_val.jsonl`.
#
# ## 2. Exact match, and what "normalised" hides
#
# A value-only question has one right answer. But is `" baker"` the answer `"baker"`? Is
# `"Baker."`? The book's `is_correct` compares *normalised* strings — case folded, spaces collapsed,
# final punctuation dropped. Strict equality is another choice. On the SFT model's replies to the
# held-out questions:

# %%
heldout = world.questions("heldout", "train")
replies = answer_questions(sft, tokenizer, [item.prompt for item in heldout])
strict = sum(reply == item.answer for reply, item in zip(replies, heldout)) / len(heldout)
stripped = sum(reply.strip() == item.answer for reply, item in zip(replies, heldout)) / len(heldout)
normalised = sum(is_correct(reply, item.answer) for reply, item in zip(replies, heldout)) / len(heldout)
print(f"{len(heldout)} held-out questions: strict {strict:.1%}, spaces stripped {stripped:.1%}, normalised {normalised:.1%}")
print("what normalisation forgives:", sorted({(r, i.answer) for r, i in zip(replies, heldout)
                                              if is_correct(r, i.answer) and r.strip() != i.answer})[:4])
assert strict <= stripped <= normalised
expect("evaluation.exact_match.normalised", normalised, n=len(heldout))

# %% [markdown]
# A score is a claim about *which* differences do not matter. Dropping case and punctuation is
# harmless for names and numbers; for free text it is not enough (`"a baker"` is still wrong), and
# for code it is too much. Report which normalisation you used, or the numbers cannot be compared.
#
# ## 3. Multiple choice: log-likelihood or generation
#
# C-Eval, CMMLU, ARC and HellaSwag are multiple-choice: a question and four answers. A harness
# scores a *base* model without asking it to write anything: it computes
# $\log p(\text{choice} \mid \text{question})$ for each choice and counts the item right when the true
# choice is the most likely (*acc*), or the most likely per character (*acc_norm*, which stops long
# choices from being penalised for their length). Generation instead asks the model to write the
# answer and compares. On the held-out people's facts, as four-way questions (the true value and
# three others of the same attribute), for the pretrained and the SFT model:

# %%
rng = random.Random(0)
values = {(a, lang): sorted({p.value(a, lang) for p in world.people}) for a in ATTRIBUTES for lang in ("en", "zh")}
mc_items = []
for item in heldout:
    if item.lang != "en":
        continue
    others = rng.sample([v for v in values[item.attribute, "en"] if v != item.answer], 3)
    choices = others + [item.answer]
    rng.shuffle(choices)
    mc_items.append({"question": f"Q: {item.prompt}\nA:", "choices": choices, "answer": choices.index(item.answer),
                     "prompt": item.prompt, "truth": item.answer})


@torch.no_grad()
def choice_log_likelihoods(model, context, choices):
    """log p(" " + choice | context) for each choice, summed over its tokens."""
    context_ids = [BOS_ID, *tokenizer.encode(context)]
    scores = []
    for choice in choices:
        choice_ids = tokenizer.encode(" " + choice)
        ids = torch.tensor([context_ids + choice_ids])
        log_probs = F.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
        scores.append(sum(log_probs[len(context_ids) - 1 + i, t].item() for i, t in enumerate(choice_ids)))
    return scores


def multiple_choice_accuracy(model, items):
    return sum(max(range(4), key=lambda j: choice_log_likelihoods(model, it["question"], it["choices"])[j])
               == it["answer"] for it in items) / len(items)


mc_subset = mc_items[:200]
mc = {name: multiple_choice_accuracy(model, mc_subset) for name, model in (("pretrained", pretrained), ("SFT", sft))}
generated = {name: exact_match_share for name, exact_match_share in
             ((name, sum(is_correct(r, it["truth"]) for r, it in
                         zip(answer_questions(model, tokenizer, [it["prompt"] for it in mc_subset]), mc_subset)) / len(mc_subset))
              for name, model in (("pretrained", pretrained), ("SFT", sft)))}
print(f"{len(mc_subset)} four-way questions (chance 25%):")
for name in mc:
    low, high = wilson_interval(round(mc[name] * len(mc_subset)), len(mc_subset))
    print(f"  {name:>10}: by log-likelihood {mc[name]:.0%} [{low:.0%}, {high:.0%}], by generating the answer {generated[name]:.0%}")
    expect(f"evaluation.multiple_choice.{name}", mc[name], n=len(mc_subset))
assert mc["pretrained"] > 0.5 > generated["pretrained"]

# %% [markdown]
# The pretrained model "knows" the answers — it ranks the true value first far above chance —
# but asked to *write* an answer in the chat template it writes something else, since it has never
# seen the template. That is why benchmarks score base models by log-likelihood: a generation
# score would measure whether the model follows a format, not what it knows. And it is why a
# base model's C-Eval score (upstream reports about 25% for minimind-3 — the chance level of a
# four-way choice) says little either way about a 26M-parameter model: the questions ask for
# knowledge a model of that size trained on that data barely has.
#
# ## 4. Intervals, and how many items a difference needs
#
# A share measured on $n$ items is itself uncertain. The Wilson interval (`minimind.eval.wilson_interval`)
# is the 95% interval the book prints everywhere. To claim that model A beats model B by $d$, the
# test must be able to see $d$: with both near $p$, a two-sided test at 5% with 80% power needs
# about
#
# $$ n \approx \frac{(z_{0.975} + z_{0.8})^2 \cdot 2p(1-p)}{d^2} $$
#
# items per model. The table and a simulation of it:

# %%
def items_needed(p, d, z_alpha=1.96, z_beta=0.8416):
    return math.ceil((z_alpha + z_beta) ** 2 * 2 * p * (1 - p) / d ** 2)


for p in (0.5, 0.8, 0.95):
    print(f"p = {p:.2f}: " + ", ".join(f"d = {d:.0%} needs {items_needed(p, d):>5,}" for d in (0.02, 0.05, 0.1, 0.2)))

simulation = random.Random(1)
n, p_a, p_b, trials = items_needed(0.5, 0.1), 0.55, 0.45, 2000
detected = 0
for _ in range(trials):
    a = sum(simulation.random() < p_a for _ in range(n))
    b = sum(simulation.random() < p_b for _ in range(n))
    pooled = (a + b) / (2 * n)
    z = (a - b) / n / math.sqrt(2 * pooled * (1 - pooled) / n)
    detected += abs(z) > 1.96
print(f"simulated: a 10-point difference at {n} items per model is detected in {detected / trials:.0%} of {trials} trials")
assert 0.75 < detected / trials < 0.85

# %% [markdown]
# Chapter 9's original distillation claim — nine points on 150 questions, one seed — sits right at
# the edge of what 150 items can show. Two more rules follow from the same arithmetic: compare
# models on the *same* items (a paired comparison cancels the items' own difficulty), and when the
# training itself is random (seeds, data order), repeat it; the spread across seeds is a second
# source of error that no number of test items removes. The book's bands (set-up page) are that
# second kind, measured.
#
# ## 5. Contamination: did the test leak into the training data?
#
# A test set is only a test if the model never trained on it. The usual check, from GPT-3 onwards, is
# n-gram overlap: the share of a test item's n-grams that also occur in the training corpus. Here
# with 8-grams of words (characters for Chinese), against the pretraining corpus:

# %%
def ngrams(text, n=8):
    units = re.findall(r"[\u4e00-\u9fff]|[A-Za-z0-9']+", text.lower())
    return {tuple(units[i:i + n]) for i in range(len(units) - n + 1)}


corpus_grams = set()
for row in read_jsonl(dataset_path("pretrain", "train"), "pretrain"):
    corpus_grams |= ngrams(row["text"])


def overlap(texts):
    """Share of the texts with at least half of their 8-grams in the corpus."""
    flagged = 0
    for text in texts:
        grams = ngrams(text)
        flagged += bool(grams) and len(grams & corpus_grams) / len(grams) >= 0.5
    return flagged / len(texts)


held_out_problems = [f"{p.prompt}\n{p.steps}" for p in world.problems("val")]
training_problems = [f"{p.prompt}\n{p.steps}" for p in world.problems("train")]
biography_sentences = [row["text"] for row in read_jsonl(dataset_path("pretrain", "val"), "pretrain")][:200]
contaminated = held_out_problems[:100] + training_problems[:100]
for name, texts in (("held-out problems with their working", held_out_problems),
                    ("training problems with their working", training_problems),
                    ("held-out biographies (pretrain_val)", biography_sentences)):
    print(f"{name:>38}: {overlap(texts):.1%} flagged")
assert overlap(held_out_problems) < min(0.1, overlap(training_problems)) < overlap(biography_sentences)

# %% [markdown]
# Few held-out problems are flagged, and not for being in the corpus (chapter 8's claim that none of
# them is in any training text holds by construction): the working restates one-digit column sums
# such as "7+5=12", which recur from problem to problem, so a problem with many common columns shares
# half its 8-grams with *other* problems. That is the probe's false-positive rate on text written in a
# fixed format. The training problems are not in the *pretraining* corpus either (it holds other
# problems worked the same way), and are flagged only a little more often. The validation
# biographies are flagged far more: they are fresh samples of the *same templates and facts* as the
# training ones, so many of their 8-grams occur in training. That is by design here — they measure how well the
# model learnt a distribution it was trained on, not generalisation to new facts — and it is exactly
# the situation in which a benchmark score overstates what a model can do: overlap measures
# exposure, and exposure is what a test is meant to exclude.
#
# ## 6. A judge that needs no language model
#
# Free-text replies ("Tell me about Begros.") cannot be scored by exact match. A common fix is to
# ask a large model to grade them — a judge with its own biases, and one this book cannot download.
# Where the ground truth is known, a rule-based judge is better: extract each claim the reply makes
# and check it. The world knows every person's five facts; the judge below finds which values a
# reply states and scores the reply by the share of the person's facts it states correctly, and
# counts the facts it states *wrongly* (a value of the attribute that belongs to someone else). The
# replies judged are those of chapter 6's DPO model, the one trained to describe people.

# %%
def judge(reply, person, lang):
    """(facts stated correctly, facts stated wrongly) of a description of `person`."""
    right = wrong = 0
    for attribute in ATTRIBUTES:
        truth = person.value(attribute, lang)
        # a value counts where no Latin letter touches it (\w would also refuse "名水手": CJK is \w)
        stated = [v for v in values[attribute, lang] if re.search(rf"(?<![A-Za-z]){re.escape(v)}(?![A-Za-z])", reply)]
        if attribute == "age":
            stated = re.findall(r"\d+", reply)[:1]
        right += truth in stated
        wrong += any(v != truth for v in stated)
    return right, wrong


people = world.heldout_people[:60]
for lang in ("en", "zh"):  # the judge itself, on replies whose verdict is known
    true_description = world.describe(people[0], lang, "polite", random.Random(0))
    assert judge(true_description, people[0], lang) == (5, 0)
    assert judge(true_description, people[1], lang)[1] >= 3, "another person's facts are mostly wrong"
prompts = [DESCRIBE_PROMPTS[lang][0].format(name=p.name) for p in people for lang in ("en", "zh")]
descriptions = answer_questions(zoo.load("dpo"), tokenizer, prompts, max_new_tokens=70)
judged = [judge(reply, person, lang) for reply, (person, lang) in
          zip(descriptions, [(p, lang) for p in people for lang in ("en", "zh")])]
right_share = sum(r for r, _ in judged) / (5 * len(judged))
wrong_share = sum(w for _, w in judged) / (5 * len(judged))
print(f"{len(judged)} descriptions of held-out people: {right_share:.0%} of their facts stated right, "
      f"{wrong_share:.0%} stated wrong (the rest not stated)")
print(f"e.g. {prompts[0]!r} → {descriptions[0]!r}\n     judged {judged[0]} (truth: {people[0]})")
expect("evaluation.judge.right", right_share, n=5 * len(judged))
expect("evaluation.judge.wrong", wrong_share, n=5 * len(judged))

# %% [markdown]
# The judge says what a glance at fluent replies hides: the DPO model's descriptions of people it
# never saw in fine-tuning state some facts right and many wrong — often a whole other person's
# (chapter 6 showed examples). Rule-based judges are narrow — this one knows five attributes and
# nothing else — but they are exact, cheap and free of a grader's taste. Where one can be written, it is the honest choice.
#
# ## 7. The lm-evaluation-harness
#
# The harness upstream MiniMind's scores come from runs *tasks*: a YAML file that says where the
# items are, how to turn one into a prompt, what the choices or the target are, and which metric to
# compute. `minimind.eval.harness` registers the book's models with it as the model `minimind`
# (log-likelihood, rolling log-likelihood for perplexity, and generation through our KV cache), so
# every task of the harness runs on them. C-Eval or CMMLU need their datasets from the Hugging Face
# Hub (`python -m minimind.eval.harness --model minimind --model_args path=sft --tasks ceval-valid` on a
# connected machine); here is a task of our own — section 3's four-way questions, written as files:

# %%
task_folder = Path(tempfile.mkdtemp()) / "tasks"
task_folder.mkdir()
(task_folder / "book_facts_mc.jsonl").write_text(
    "".join(json.dumps({"question": it["question"], "choices": it["choices"], "answer": it["answer"]}) + "\n"
            for it in mc_subset), encoding="utf-8")
(task_folder / "loader.py").write_text(
    "import json\nfrom pathlib import Path\nimport datasets\n\n"
    "def load(data_file, **_):\n"
    "    rows = [json.loads(l) for l in (Path(__file__).parent / data_file).read_text().splitlines() if l]\n"
    "    return datasets.DatasetDict({'test': datasets.Dataset.from_list(rows)})\n", encoding="utf-8")
(task_folder / "book_facts_mc.yaml").write_text("""task: book_facts_mc
custom_dataset: !function loader.load
dataset_kwargs:
  data_file: book_facts_mc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""", encoding="utf-8")
print((task_folder / "book_facts_mc.yaml").read_text())

# %%
from minimind.eval.harness import MiniMindLM, evaluate_tasks, load_tasks, task_manager

manager = task_manager(["book_facts_mc"], include_path=task_folder)
results = evaluate_tasks(MiniMindLM(model=pretrained, tokenizer=tokenizer, batch_size=16),
                         load_tasks(["book_facts_mc"], manager), manager)
harness_accuracy = results["results"]["book_facts_mc"]["acc,none"]
print(f"lm-eval, model minimind, pretrained: acc {harness_accuracy:.3f}; section 3's own computation {mc['pretrained']:.3f}")
# not the same sums to the last digit (the harness tokenizes question and answer apart and batches
# in its own order): near-ties may fall the other way — 0 to 3 of the 200 items in the measured runs
print(f"items scored differently: {round(abs(harness_accuracy - mc['pretrained']) * len(mc_subset))} of {len(mc_subset)}")
assert abs(harness_accuracy - mc["pretrained"]) * len(mc_subset) <= 6

# %% [markdown]
# The harness and the chapter's twenty lines agree to within a few items (3 of 200 in the stored
# run): near-ties between two choices, whose log-likelihoods the harness computes from the question
# and the answer tokenized apart and in batches of its own, can fall the other way. A benchmark score is nothing more
# than this computation, run on someone else's items. Knowing that is the best defence against
# reading too much into one. The whole book's held-out suites are one command too:
# `minimind eval --model sft --suites facts,reasoning,preference,identity --out results.json`
# prints every score with its interval and writes them as JSON.
#
# ## Exercises
#
# ```{exercise} A tokenizer-free comparison
# :label: ex-11-bpb
# Train a tokenizer with `split_cjk=False` (chapter 1) and compute, for the Chinese validation text,
# the number of tokens and the bytes. If a model with that tokenizer had the same bits per byte as
# the book's pretrained model, what would its per-token loss and perplexity be? What does that say
# about comparing perplexities across tokenizers?
# ```
#
# ```{solution} ex-11-bpb
# :class: dropdown
# Same bits per byte means the same total bits: $\text{nats/token} = \text{bpb} \cdot \ln 2 \cdot
# \text{bytes} / \text{tokens}$. Fewer tokens for the same bytes means a larger per-token loss and a
# much larger perplexity, for a model that is exactly as good. A perplexity comparison between
# tokenizers therefore says mostly how long the tokens are.
# ```
#
# ```{exercise} Items for a claim
# :label: ex-11-items
# Chapter 5 compares SFT with and without the loss mask on the trained, reworded and held-out
# questions. Using `items_needed`, how many questions per group would a 5-point difference at
# about 50% accuracy need? Does the chapter have that many? Then compute the Wilson intervals of
# both models on the held-out group and say whether they overlap.
# ```
#
# ```{solution} ex-11-items
# :class: dropdown
# `items_needed(0.5, 0.05)` gives the number per model; the held-out group has 1,200 questions per
# language, the reworded one 300. Compute the intervals with `wilson_interval(round(share * n), n)`
# for each model and compare them: overlapping 95% intervals do not prove there is no difference,
# but non-overlapping ones are strong evidence there is.
# ```
#
# ```{exercise} Plant a leak
# :label: ex-11-leak
# Add the first 50 held-out problems, with their working, to a copy of the pretraining corpus
# (`corpus_grams |= ngrams(text)` for each) and run `overlap` again. Which share do you get, and
# which threshold would you choose to flag contamination on real data, where paraphrases and
# boilerplate make overlap noisier?
# ```
#
# ```{solution} ex-11-leak
# :class: dropdown
# The planted problems are flagged (their 8-grams are now all in the corpus), the other held-out
# problems are not: the check works when the leak is verbatim. On real corpora, boilerplate (licence
# headers, templates) makes innocent texts share n-grams, and a paraphrased leak shares few; so a
# threshold is a trade-off, set by looking at the distribution of overlap scores, and exact matches
# of long n-grams (13 words in GPT-3's check) are the strongest evidence.
# ```
#
# ```{exercise} Write the Wilson interval
# :label: ex-11-wilson
# Write `my_wilson(successes, n, z=1.96)` returning the (low, high) Wilson score interval and check it
# with `minimind.checks.evaluation.check_wilson_interval(my_wilson)`.
# ```
#
# ```{solution} ex-11-wilson
# :class: dropdown
# With $\hat p = k/n$: centre $(\hat p + z^2/2n)/(1 + z^2/n)$, half-width
# $\frac{z}{1 + z^2/n}\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}$. `minimind.eval.wilson_interval` is a
# solution; the cell below checks it.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.evaluation import check_wilson_interval

check_wilson_interval(wilson_interval)

# %% [markdown]
# ## Summary
#
# - Perplexity is per token and depends on the tokenizer; bits per byte divides the same total
#   information by the bytes of the text and compares across tokenizers.
# - An exact-match score carries a choice of normalisation; report it.
# - A base model is scored on multiple choice by log-likelihood: the pretrained model ranks the true
#   fact first far above chance while it cannot yet write an answer in the chat template.
# - Every share gets an interval; a claimed difference needs enough items — the formula and the
#   simulation above say how many — and random training needs seeds as well.
# - n-gram overlap shows contamination when the leak is verbatim; the book's held-out problems pass.
# - A judge built from ground truth scores free text exactly where the truth is known.
# - The lm-evaluation-harness computes exactly what the chapter computes, on standard items;
#   `minimind eval` and `python -m minimind.eval.harness` run both on any checkpoint.
#
# ## Further reading
#
# - The lm-evaluation-harness: {cite}`gao2023harness`; C-Eval {cite}`huang2023ceval`.
# - Contamination checks by n-gram overlap: {cite}`brown2020gpt3`.
# - Intervals for proportions: {cite}`wilson1927`.
