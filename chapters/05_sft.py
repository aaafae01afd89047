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
# # Chapter 5 — Supervised fine-tuning: from a text continuer to a chat model
#
# The model of chapter 4 continues text. Asked a question, it writes whatever usually follows
# such text in its corpus — another question, a greeting, the next line of a dialogue. Supervised
# fine-tuning (SFT) teaches it the shape of a conversation: a user turn, then an assistant reply
# that answers it and stops. This chapter renders conversations with MiniMind's chat template,
# builds the loss mask that trains only on the assistant's replies, measures what happens
# without it, fine-tunes the chapter model, and scores its answers on questions it was trained on,
# on reworded ones, and on people whose facts it only ever read in pretraining.
#
# **Learning objectives**
#
# - render single- and multi-turn conversations with the chat template and read the result token by token;
# - build SFT labels from the assistant loss mask, including truncation, and check them against `minimind.data.datasets`;
# - measure what training on the user's tokens does, against training on the replies only;
# - score a chat model by exact match on trained, reworded and held-out questions, and say what SFT does and does not teach;
# - hold a multi-turn conversation with the fine-tuned model.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import html
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import HTML, display

from minimind import zoo
from minimind.checks.bands import expect, expect_outside, recorded_values
from minimind.data.datasets import SFTDataset, collate_causal_lm
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path
from minimind.eval import exact_match, is_correct, wilson_interval
from minimind.generate import SamplingParams, generate, generate_batch
from minimind.runtime import cpu_threads
from minimind.tokenizer import BOS_ID
from minimind.train import plot_metrics

# Every core (MINIMIND_THREADS overrides it; `make test` runs one chapter per core on one thread each).
# Figures that float rounding moves differ a little on another CPU or thread count, so the chapter
# asserts them against bands measured across seeds and kernel paths (minimind.checks.bands).
torch.set_num_threads(cpu_threads())
torch.manual_seed(0)
tokenizer = zoo.tokenizer()
world = build_world(seed=0)
pretrained = zoo.pretrained()
print(world)

# %% [markdown]
# ## 1. The chat template
#
# A conversation is a list of messages with roles `system`, `user` and `assistant`. MiniMind
# writes each message as `<|im_start|>role\ncontent<|im_end|>\n` (the ChatML layout), adds the
# default system prompt "You are a helpful assistant" when the conversation has none, and — when
# asking the model for a reply — ends with the *generation prompt* `<|im_start|>assistant\n`. The
# model then writes the reply and closes it with `<|im_end|>`, which is where generation stops.
# The template lives in one place, `MiniMindTokenizer.apply_chat_template`, and renders exactly as
# MiniMind2's does.

# %% tags=["nbval-check-output"]
sft_rows = list(read_jsonl(dataset_path("sft", "train"), "sft"))
conversation = next(row["conversations"] for row in sft_rows if len(row["conversations"]) >= 6)
print(tokenizer.apply_chat_template(conversation))
print("— asking for the next reply:")
print(tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True))

# %% [markdown]
# ## 2. The loss mask
#
# SFT minimises the same next-token cross-entropy as pretraining, but only over the tokens the
# model should learn to *write*: the assistant's replies. The system prompt, the user's turns
# and the `<|im_start|>assistant\n` headers are context — the model reads them but is not
# trained to produce them. `render_conversation` returns the ids and this mask from one
# rendering, so they cannot drift apart: 1 on every reply token, on its closing `<|im_end|>` (so
# the model learns to stop) and on the newline after it (as upstream MiniMind does).
#
# Below, supervised tokens are green; each box is one token.

# %% tags=["nbval-check-output"]
def show_mask(ids, mask):
    boxes = []
    for token_id, supervised in zip(ids, mask):
        piece = html.escape(tokenizer.decode([token_id])).replace("\n", "⏎")
        colour = "#b7ebb4" if supervised else "#eeeeee"
        boxes.append(f'<span style="background:{colour};border:1px solid #bbb;border-radius:3px;'
                     f'margin:1px;padding:0 2px;font-family:monospace;white-space:pre">{piece}</span>')
    display(HTML("<div style='line-height:2'>" + "".join(boxes) + "</div>"))


ids, mask = tokenizer.render_conversation(conversation)
show_mask(ids, mask)
supervised_text = tokenizer.decode([i for i, m in zip(ids, mask) if m])
print(f"{len(ids)} tokens, {sum(mask)} supervised: {supervised_text!r}")
assert supervised_text == "".join(m["content"] + "<|im_end|>\n" for m in conversation if m["role"] == "assistant")

# %% [markdown]
# The labels follow from the mask: the token id where the mask is 1, and −100 (ignored by the
# loss) elsewhere. A conversation longer than `max_seq_len` is cut, ids and labels together; a
# reply cut in the middle is still supervised up to the cut. Built by hand, then compared with
# what `SFTDataset` — the class the SFT stage trains on — returns for every conversation of the
# training set:

# %% tags=["nbval-check-output"]
def sft_labels(ids, mask, max_len):
    ids, mask = ids[:max_len], mask[:max_len]
    return ids, [token if supervised else -100 for token, supervised in zip(ids, mask)]


max_len = zoo.config("sft").max_seq_len
dataset = SFTDataset(dataset_path("sft", "train"), tokenizer, max_seq_len=max_len)
for index, row in enumerate(sft_rows):
    ours_ids, ours_labels = sft_labels(*tokenizer.render_conversation(row["conversations"]), max_len)
    assert ours_ids == dataset[index]["input_ids"].tolist() and ours_labels == dataset[index]["labels"].tolist()

cut_ids, cut_labels = sft_labels(ids, mask, 40)
print(f"all {len(dataset)} training conversations agree; cut at 40 tokens, the example keeps "
      f"{sum(label != -100 for label in cut_labels)} supervised tokens")
lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
supervised_share = sum(int((dataset[i]["labels"] != -100).sum()) for i in range(len(dataset))) / sum(lengths)
print(f"conversation length: max {max(lengths)} tokens (max_seq_len {max_len}); "
      f"{supervised_share:.0%} of all tokens are supervised")
assert 0.15 < supervised_share < 0.4

# %% [markdown]
# So only about a quarter of the tokens carry a training signal — the rest is the template, the
# default system prompt and the questions.
#
# ## 3. Before fine-tuning
#
# The pretrained model has seen plain-text Q&A ("Q: … A: …") and a few dialogues written as
# "user: … assistant: …", but never the chat template. Asked a question in it, it continues the
# text as best it can:

# %%
questions = world.questions("sft", "train", "en")[:2] + world.questions("heldout", "train", "zh")[:1]
for item in questions:
    prompt = tokenizer.encode_chat_prompt([{"role": "user", "content": item.prompt}])
    reply = tokenizer.decode(generate(pretrained, prompt, max_new_tokens=16))
    print(f"{item.prompt!r} → {reply!r} (truth: {item.answer})")

# %% [markdown]
# ## 4. Fine-tuning
#
# `python -m minimind.train.sft` starts from the pretrained checkpoint and trains on the SFT
# conversations of the synthetic world: value-only answers to questions about the *SFT half* of
# the people, asked with four phrasings per attribute; multi-turn chats about them, "tell me about
# X" replies, greetings and an identity. The *held-out* half is never asked about in SFT (nor in
# pretraining's Q&A); their facts appear only in pretraining biographies. Batches are padded to
# their longest conversation; the loss is the masked next-token cross-entropy, so the curve
# below measures reply tokens only. `zoo.path("sft")` trains it once and caches it.
#
# How an answer is written matters as much as what it says. A fact is stored under the tokens the
# model read it in: " baker", with its space, in "works as a baker". So an English word in a reply
# is written after a space too (" baker", not "baker", which this tokenizer splits into pieces the
# model never saw in a sentence); a number needs none, since digits are always tokens of their own.
# Chapter 1's tokenizer gives each Chinese character a token of its own for the same reason: a
# tokenizer that merged the phrase "是一名水手" into one token would store the fact "水手" under a
# token that no answer ever uses.

# %%
print("in pretraining text:", tokenizer.tokens("works as a baker."), tokenizer.tokens("Begros是一名水手。"))
print("an answer, as the data writes it:", tokenizer.tokens(" baker"), tokenizer.tokens("水手"),
      "  without the space:", tokenizer.tokens("baker"))
config = zoo.config("sft")
sft_dir = zoo.path("sft")
sft_model = zoo.load(sft_dir)
records = zoo.metrics(sft_dir)
conversations = sum(1 for _ in read_jsonl(dataset_path("sft", "train"), "sft"))
print(f"{conversations} conversations; {config.max_steps} steps of {config.batch_size}, peak lr {config.lr:g}, "
      f"{records[-1]['epoch']:.1f} passes over the SFT set")
print(f"loss on reply tokens: step {records[0]['step']} {records[0]['loss']:.2f} → step {records[-1]['step']} {records[-1]['loss']:.2f}")
expect("sft.final_loss", records[-1]["loss"])
fig, ax = plt.subplots(figsize=(6, 3))
plot_metrics(records, keys=("loss",), ax=ax)
ax.set_ylabel("SFT loss (reply tokens)")
plt.show()

# %% [markdown]
# The peak learning rate, 7·10⁻⁴, is about a quarter of pretraining's: high enough that 250 steps
# fit the trained questions, low enough that the fine-tuning *reuses* the question-answering that
# pretraining's Q&A built instead of learning a new one. The exercise "How fast to fine-tune?"
# measures what a rate on either side does.
#
# ## 5. Scoring the answers
#
# Each question has a value-only answer; a reply counts if it equals the value up to case,
# spaces and final punctuation (greedy decoding, at most 16 new tokens). Three groups, each share
# with its 95% interval (Wilson's):
#
# - **trained**: the SFT people, asked with the phrasings used in training;
# - **reworded**: the SFT people, asked with one new phrasing per attribute ("Tell me the age of X.");
# - **held-out**: the other 60 people, whose facts the model read only in pretraining biographies.

# %%
groups = {"trained": world.questions("sft", "train"), "reworded": world.questions("sft", "reworded"),
          "held-out": world.questions("heldout", "train")}
TARGETS = {"trained": 0.9, "reworded": 0.5, "held-out": 0.4}
scores, replies, sizes = {}, {}, {}
for model_name, model in (("pretrained", pretrained), ("SFT", sft_model)):
    for group, items in groups.items():
        for lang in ("en", "zh"):
            subset = [item for item in items if item.lang == lang]
            sizes[group, lang] = len(subset)
            scores[model_name, group, lang], replies[model_name, group, lang] = exact_match(model, tokenizer, subset)


def with_interval(share, n):
    low, high = wilson_interval(round(share * n), n)
    return f"{share:4.0%} [{low:.0%}, {high:.0%}]"


print(f"{'':>10}  " + "  ".join(f"{group + ' ' + lang:>19}" for group in groups for lang in ("en", "zh")))
for model_name in ("pretrained", "SFT"):
    print(f"{model_name:>10}  " + "  ".join(f"{with_interval(scores[model_name, g, l], sizes[g, l]):>19}"
                                          for g in groups for l in ("en", "zh")))
print("         n  " + "  ".join(f"{sizes[g, l]:>19}" for g in groups for l in ("en", "zh")))


def majority_baseline(items):
    """Exact match of always answering the most common value among the SFT people."""
    common = {(a, lang): Counter(p.value(a, lang) for p in world.sft_people).most_common(1)[0][0]
              for a in {i.attribute for i in items} for lang in ("en", "zh")}
    return sum(item.answer == common[item.attribute, item.lang] for item in items) / len(items)


baseline = {lang: majority_baseline([i for i in groups["held-out"] if i.lang == lang]) for lang in ("en", "zh")}
print(f"  majority: held-out {baseline['en']:.0%} / {baseline['zh']:.0%} (always the most common value)")
print("the book's targets: " + ", ".join(
    f"{group} {lang} ≥ {TARGETS[group]:.0%} {'met' if scores['SFT', group, lang] >= TARGETS[group] else 'NOT met'}"
    for group in groups for lang in ("en", "zh")))
assert max(scores["pretrained", g, l] for g in groups for l in ("en", "zh")) < 0.05
for group, items in groups.items():
    for lang in ("en", "zh"):
        share_sft, n_items = scores["SFT", group, lang], sizes[group, lang]
        # what SFT must do on every run: answer far above the majority baseline, trained people best
        assert wilson_interval(round(share_sft * n_items), n_items)[0] > 2 * max(baseline.values()), (group, lang)
        assert scores["SFT", "trained", lang] > share_sft or group == "trained"
        expect(f"sft.exact_match.{group}.{lang}", share_sft, n=n_items)

# %% [markdown]
# Where do the held-out answers come from? Not from SFT, which never mentions those people: the
# pretrained model can already answer them — in its own format. Asked in the "Q: … A:" layout of
# pretraining's Q&A documents (which are about the *other* half of the people), it answers most
# held-out questions right, long before it has seen the chat template:

# %%
def pretraining_format_exact_match(model, items):
    from minimind.data.synthetic import PRETRAIN_QA_FORMAT

    prompts = [PRETRAIN_QA_FORMAT[i.lang].format(question=i.prompt, answer="").rstrip() for i in items]
    ids = [[BOS_ID, *tokenizer.encode(prompt)] for prompt in prompts]
    outs = []
    for start in range(0, len(ids), 100):
        outs += generate_batch(model, ids[start:start + 100], SamplingParams(max_new_tokens=8))
    answers = [tokenizer.decode(out).split("\n")[0] for out in outs]
    return sum(is_correct(a, i.answer) for a, i in zip(answers, items)) / len(items)


in_pretraining_format = {lang: pretraining_format_exact_match(
    pretrained, [i for i in groups["held-out"] if i.lang == lang]) for lang in ("en", "zh")}
print("held-out questions, pretrained model, pretraining's Q&A layout: "
      + ", ".join(f"{lang} {with_interval(share, sizes['held-out', lang])}" for lang, share in in_pretraining_format.items()))
print("held-out questions, SFT model, chat template:                  "
      + ", ".join(f"{lang} {with_interval(scores['SFT', 'held-out', lang], sizes['held-out', lang])}" for lang in ("en", "zh")))
for lang in ("en", "zh"):
    expect(f"sft.pretrained_qa_format.heldout.{lang}", in_pretraining_format[lang], n=sizes["held-out", lang])

# %% [markdown]
# Read against the majority baseline, the SFT model answers far above it in every group: best on the
# people it was trained on, then on new phrasings of their questions, then on the held-out people,
# whose facts it can only have from pretraining — SFT never mentions them, so those answers are
# *extracted*, not taught. The book's targets (the line under the table) are printed, not asserted:
# in one of the runs the bands file records — this recipe on another CPU — the held-out people came
# out just under 40%, so whether the last two are met depends on the machine. The
# extraction is still partial: asked in pretraining's own Q&A layout, the pretrained model answers
# more held-out questions than the SFT model does through the chat template — fine-tuning taught the
# new layout but carried over only part of the retrieval. Two choices of the recipe carry these
# shares: a pretraining long enough to store the facts firmly (chapter 4's budget), and an SFT rate
# high enough to fit the trained questions in 250 steps. The bands file records how far the shares
# move from one training run to another.
#
# ## 6. With and without the loss mask
#
# What if SFT trained on *every* token, prompts included (`--supervise_all`)? The same run — same
# data, steps, learning rate, seed — with the mask switched off is cached as a second model.

# %%
all_tokens_model = zoo.load("sft_all_tokens")
paired = []  # per question: (right with the mask, right on every token)
for group, items in groups.items():
    for lang in ("en", "zh"):
        subset = [item for item in items if item.lang == lang]
        scores["all tokens", group, lang], all_replies = exact_match(all_tokens_model, tokenizer, subset)
        paired += [(is_correct(mine, item.answer), is_correct(theirs, item.answer))
                   for mine, theirs, item in zip(replies["SFT", group, lang], all_replies, subset)]
for model_name in ("SFT", "all tokens"):
    print(f"{model_name:>10}: " + "  ".join(f"{group} {scores[model_name, group, 'en']:.0%} / "
                                          f"{scores[model_name, group, 'zh']:.0%}" for group in groups) + "   (en / zh)")
masked_mean = sum(scores["SFT", g, l] for g in groups for l in ("en", "zh")) / 6
all_mean = sum(scores["all tokens", g, l] for g in groups for l in ("en", "zh")) / 6
# The two models answer the same questions, so the gain is measured question by question: its mean
# over the questions and a 95% interval from the spread of the per-question differences.
differences = torch.tensor([float(a) - float(b) for a, b in paired])
gain, half_width = differences.mean().item(), 1.96 * differences.std().item() / len(paired) ** 0.5
print(f"mean exact match: {masked_mean:.0%} with the mask, {all_mean:.0%} on every token; "
      f"per question the mask gains {gain:+.1%} [{gain - half_width:+.1%}, {gain + half_width:+.1%}] (n = {len(paired)})")
# Within one run (same seed, data and steps; only the mask differs) the mask wins beyond the noise of
# the questions drawn, on every run measured; how much it wins moves from run to run (see the text).
assert gain - half_width > 0
expect("sft.mean_exact_match.masked", masked_mean)
expect("sft.mean_exact_match.all_tokens", all_mean)
measured = {run: value - recorded_values("sft.mean_exact_match.all_tokens")[run]
            for run, value in recorded_values("sft.mean_exact_match.masked").items()}
print(f"the gain of the six-group mean in the {len(measured)} runs measured for the bands file: "
      + ", ".join(f"{gain:+.0%}" for gain in sorted(measured.values())))

labels = [f"{g}\n{l}" for g in groups for l in ("en", "zh")]
x = torch.arange(len(labels)).float()
fig, ax = plt.subplots(figsize=(7, 3))
for offset, model_name in ((-0.2, "SFT"), (0.2, "all tokens")):
    ax.bar(x + offset, [scores[model_name, g, l] for g in groups for l in ("en", "zh")], width=0.4,
           label="reply tokens only (mask)" if model_name == "SFT" else "every token")
ax.set_xticks(x.tolist(), labels)
ax.set_ylabel("exact match")
ax.legend()
plt.show()

# %% [markdown]
# The mask wins in every run measured, and the interval says the win is not an accident of the
# questions drawn. Its *size* is another matter: the last line lists it for each run of the bands
# file (other seeds and kernel paths), and it moves by several points from run to run, as the
# scores themselves do.
#
# Where does the difference come from? Training on every token spends most of the gradient on
# predicting the *prompt* — about three of every four tokens — which the model never has to write.
# The per-token loss on held-out SFT conversations (`sft_val`), split into prompt tokens and
# reply tokens, shows what each model learnt:

# %%
def split_losses(model, conversations, batch_size=64):
    """Mean next-token loss over prompt tokens and over reply tokens."""
    totals = Counter()
    for start in range(0, len(conversations), batch_size):
        rendered = [tokenizer.render_conversation(c) for c in conversations[start:start + batch_size]]
        batch = collate_causal_lm([{"input_ids": torch.tensor(i), "labels": torch.tensor(i)} for i, _ in rendered])
        reply_mask = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        for row, (_, m) in enumerate(rendered):
            reply_mask[row, :len(m)] = torch.tensor(m, dtype=torch.bool)
        with torch.no_grad():
            logits = model(batch["input_ids"]).logits
        losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        real = batch["labels"][:, 1:] != -100
        for part, where in (("reply", reply_mask[:, 1:] & real), ("prompt", ~reply_mask[:, 1:] & real)):
            totals[part] += losses[where].sum().item()
            totals[part + " tokens"] += where.sum().item()
    return {part: totals[part] / totals[part + " tokens"] for part in ("prompt", "reply")}


val_conversations = [row["conversations"] for row in read_jsonl(dataset_path("sft", "val"), "sft")][::3]
split = {name: split_losses(model, val_conversations)
         for name, model in (("pretrained", pretrained), ("SFT", sft_model), ("all tokens", all_tokens_model))}
for name, losses in split.items():
    print(f"{name:>10}: prompt tokens {losses['prompt']:.2f} nats, reply tokens {losses['reply']:.2f} nats")
assert split["all tokens"]["prompt"] < split["SFT"]["prompt"]
for name, losses in split.items():
    for part in ("prompt", "reply"):
        expect(f"sft.split_loss.{name.replace(' ', '_')}.{part}", losses[part])
# the band catches the mask switched off: with the mask, the loss on prompt tokens stays far higher
expect_outside("sft.split_loss.SFT.prompt", split["all tokens"]["prompt"], "the same SFT run without the loss mask")

# %% [markdown]
# The all-token model has become good at predicting the prompts — the template, the default
# system prompt, the questions — and no better at the replies, the only thing a chat model is asked
# to produce. With the mask, every gradient step goes to the replies.
#
# ## 7. Multi-turn conversations
#
# SFT data includes conversations of two or three questions about the same person, and the mask
# covers every assistant turn. At inference the whole history is rendered with the template and
# the model writes the next reply. A conversation with the fine-tuned model, its own replies fed
# back as history:

# %%
def chat(model, user_turns, max_new_tokens=24):
    messages = []
    for text in user_turns:
        messages.append({"role": "user", "content": text})
        reply_ids = generate(model, tokenizer.encode_chat_prompt(messages), max_new_tokens=max_new_tokens)
        messages.append({"role": "assistant", "content": tokenizer.decode(reply_ids, skip_special_tokens=True)})
    return messages


person = world.sft_people[3]
for message in chat(sft_model, ["Hello!", f"Where does {person.name} live?", f"What is {person.name}'s job?",
                                f"{person.name}养了什么宠物？"]):
    print(f"{message['role']:>9}: {message['content']}")
print(f"(truth: {person.city}, {person.job}, {person.value('pet', 'zh')})")

# %% [markdown]
# Scored over many conversations: for each of the 60 SFT people, three trained questions in a row,
# in one language, each answered with the model's own earlier replies in the history.

# %%
def multi_turn_accuracy(model, people, lang):
    correct = total = 0
    for person in people:
        items = [i for i in world.questions("sft", "train", lang) if i.subject == person.name][::4][:3]
        messages = chat(model, [item.prompt for item in items], max_new_tokens=12)
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        correct += sum(reply.strip(" .。").lower() == item.answer.lower() for reply, item in zip(replies, items))
        total += len(items)
    return correct / total


turns = {lang: multi_turn_accuracy(sft_model, world.sft_people, lang) for lang in ("en", "zh")}
print(f"three questions per conversation: {turns['en']:.0%} (en), {turns['zh']:.0%} (zh) answered exactly")
for lang in ("en", "zh"):  # on every run: far above the majority baseline, with its earlier replies in the history
    assert wilson_interval(round(turns[lang] * 3 * len(world.sft_people)), 3 * len(world.sft_people))[0] > 2 * max(baseline.values()), lang
for lang in ("en", "zh"):
    expect(f"sft.multi_turn.{lang}", turns[lang], n=3 * len(world.sft_people))

# %% [markdown]
# ## Exercises
#
# ```{exercise} Labels from the mask
# :label: ex-04-labels
# Write `sft_labels(ids, mask, max_len)` returning `(input_ids, labels)`: both cut to `max_len`,
# labels equal to the id where the mask is 1 and −100 elsewhere. Check it with
# `minimind.checks.training.check_sft_labels`.
# ```
#
# ```{solution} ex-04-labels
# :class: dropdown
# Section 2's `sft_labels` passes the check below: cut first, then replace unsupervised positions
# by −100. Cutting after building the labels works too, as long as both lists are cut to the same length.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.training import check_sft_labels

check_sft_labels(sft_labels)

# %% [markdown]
# ```{exercise} Why supervise `<|im_end|>`?
# :label: ex-04-stop
# The mask covers each reply's closing `<|im_end|>`. What would a model trained with a mask that
# stops one token earlier do at inference? And what does supervising the newline after
# `<|im_end|>` buy (upstream does it)?
# ```
#
# ```{solution} ex-04-stop
# :class: dropdown
# Generation stops when the model emits `<|im_end|>`. If that token is never a target, the model
# never learns to emit it after a reply: it runs on to `max_new_tokens`, typically starting a new
# turn of its own ("user: …") since pretraining text continues that way. The newline after
# `<|im_end|>` is what the template always writes next; supervising it costs nothing and makes
# the model's view of the template consistent, but it is never generated at inference, since
# generation stops at `<|im_end|>`.
# ```
#
# ```{exercise} How fast to fine-tune?
# :label: ex-04-lr
# Fine-tune the pretrained model with `zoo.config("sft", lr=3e-4, out_dir="", init_from=str(zoo.path("pretrained")))`
# (`minimind.train.sft.run(config)`; about a minute and a half), and again with `lr=3e-3`, and score
# the three groups as in section 5. Then, for the held-out questions each gets wrong, check whether
# the wrong answer is the value of some *trained* person. What does the learning rate do to what
# the model learns?
# ```
#
# ```{solution} ex-04-lr
# :class: dropdown
# `r = run(config); scores = {g: exact_match(r.model.eval(), tokenizer, items)[0] for g, items in groups.items()}`,
# then, for each wrong held-out reply, test `reply.strip() in {p.value(item.attribute, item.lang) for p in world.sft_people}`.
# Compare the trained group's score and the training loss with the default run's, and the held-out
# group's: a run that has not fitted the trained Q&As has not yet learnt the layout it must answer
# in; a run that fits them but answers the held-out people with trained people's values has learnt
# a table keyed on the names it was trained on, instead of reusing the question-answering that
# pretraining built. The learning rate decides which of these gradient descent reaches first.
# ```
#
# ```{exercise} SFT and knowledge
# :label: ex-04-knowledge
# The held-out people's facts are stored (chapter 4's cloze probe) but only partly answerable
# after SFT. Name two changes to the *pretraining* data and one to the *SFT* data that you would
# expect to raise held-out accuracy, and say why.
# ```
#
# ```{solution} ex-04-knowledge
# :class: dropdown
# Pretraining: more varied statements of each fact (more paraphrases, orders, and the name in
# every sentence, so each fact is attached to the name rather than to a position in one
# biography), and more question–answer text mixed in for *some* people, which teaches the model
# that stored facts can be retrieved by a question {cite}`allenzhu2023physics31`. SFT: answers
# that carry only the value (answers that repeat the name teach the model to copy the name, not
# to retrieve), and questions about many people rather than many questions about few.
# ```
#
# ## Summary
#
# - The chat template wraps each message as `<|im_start|>role\n…<|im_end|>\n`; one function
#   returns the ids and the assistant loss mask, and `SFTDataset` turns them into labels
#   (checked here on the whole training set, truncation included).
# - Only about a quarter of the tokens are supervised. Training on every token instead spends
#   the gradient on predicting prompts, and lowers exact match (measured above).
# - After SFT the model answers trained questions (all in Chinese, about half in English, where
#   values are spelled differently than in pretraining), holds multi-turn conversations, and
#   answers a few questions about people it only read about — far fewer than it has stored;
#   reworded questions stay hard for a model this small.
#
# ## Further reading
#
# - Instruction tuning: {cite}`wei2022flan`; SFT as the first step of InstructGPT's pipeline: {cite}`ouyang2022instructgpt`.
# - How little SFT data a strong pretrained model needs: {cite}`zhou2023lima`.
# - Knowledge storage versus extraction: {cite}`allenzhu2023physics31`.
# - Upstream MiniMind's SFT data and scripts: {cite}`gong2024minimind`.
