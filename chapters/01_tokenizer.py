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
# # Chapter 1 — Tokenization: from bytes to a byte-level BPE
#
# A language model reads and writes integers, not text. This chapter builds the piece that turns
# text into those integers and back: a byte-level byte-pair-encoding (BPE) tokenizer, first from
# scratch in a few dozen lines, then with the `tokenizers` library exactly as `minimind.tokenizer`
# does. Along the way it measures what a tokenizer buys — how many characters one token carries,
# in English and in Chinese — and builds the chat template and the loss mask that every later
# chapter trains with.
#
# **Learning objectives**
#
# - explain why a model reads tokens rather than characters or bytes, and what *compression* means;
# - implement BPE training and encoding from scratch, and check them against `tokenizers` merge for merge;
# - measure compression on held-out English and Chinese text and explain the differences;
# - see why a vocabulary stops growing on a small corpus;
# - render a conversation with MiniMind's chat template and say exactly which tokens are trained on.
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
import json
import random
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path

import matplotlib.pyplot as plt
import regex  # the `regex` module understands \p{L} (any letter) and \p{N} (any digit)
from IPython.display import HTML, display

import minimind
from minimind.data.jsonl import read_jsonl
from minimind.data.synthetic import build_world, dataset_path

random.seed(0)
world = build_world(seed=0)
print(world)

# %% [markdown]
# ## 1. Text is bytes
#
# Unicode has about 150,000 characters, and UTF-8 writes each of them as 1 to 4 bytes: English
# letters take one byte, Chinese characters three, most emoji four. A model that reads *bytes*
# therefore needs only 256 input symbols and can read any text ever written — but it pays in
# sequence length. Self-attention costs $O(n^2)$ in the length $n$, and every token costs one
# forward pass to generate, so we want each token to carry as much text as possible. We measure
# this with the **compression** of a tokenizer on a text,
#
# $$
# c = \frac{\text{number of characters}}{\text{number of tokens}} ,
# $$
#
# the average number of characters per token (higher is better). Reading raw bytes gives
# $c = 1$ on English and $c \approx 1/3$ on Chinese.
#
# The world of this book is synthetic: 120 invented people (with invented names such as the ones
# below), each with an age, a city, a job, a pet and a favourite colour, described in English and
# in Chinese. Every dataset the book trains on is generated from it (see `minimind.data.synthetic`).

# %% tags=["nbval-check-output"]
person = world.people[0]
for text in [f"{person.name} lives in {person.city}.", f"{person.name}住在{person.city}。", "🙂"]:
    data = text.encode("utf-8")
    print(f"{text!r}: {len(text)} characters → {len(data)} bytes {list(data)}")

# %% [markdown]
# ## 2. Byte-pair encoding from scratch
#
# Byte-pair encoding {cite}`sennrich2016bpe` *learns* longer symbols from a corpus. Start from the 256
# bytes. Split the corpus into *words* (a pre-tokenization step, so that merges never cross a word
# boundary) and count each distinct word $w$ once with its frequency $n_w$. Then repeat:
#
# 1. count every adjacent pair of symbols $(a, b)$, weighted by how often its word occurs (formula below);
# 2. take the most frequent pair $(a^*, b^*) = \arg\max_{(a,b)} f(a,b)$ and give it a new id;
# 3. replace every occurrence of $(a^*, b^*)$ in every word by that id, scanning left to right.
#
# The count of a pair is
#
# $$
# f(a, b) = \sum_w n_w \,\bigl|\{\, i : w_i = a,\ w_{i+1} = b \,\}\bigr| .
# $$
#
# Each merge adds one symbol to the vocabulary and, when the pair does not overlap itself, shortens
# the corpus by exactly $f(a^*, b^*)$ symbols: $N_{k+1} = N_k - f(a^*, b^*)$. BPE is the greedy
# algorithm that makes the biggest such step every time. Encoding new text replays the merges in
# the order they were learned.
#
# Byte-*level* BPE, as in GPT-2 {cite}`radford2019language`, starts from bytes rather than characters,
# so no text is ever "unknown". GPT-2 pre-tokenizes with the regular expression below: an optional
# space followed by letters, or by digits, or by other symbols; runs of whitespace on their own.

# %% tags=["nbval-check-output"]
GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
print(GPT2_SPLIT.findall(f"{person.name}'s age is {person.age}.  Nice!\n{person.name}住在{person.city}。"))

# %% [markdown]
# One detail decides whether two implementations learn the *same* merges: ties. When two pairs are
# equally frequent, either is a valid BPE step. The `tokenizers` library takes the pair with the
# smallest ids, and it numbers the 256 bytes by GPT-2's printable stand-in characters (a space
# becomes `Ġ`, a newline `Ċ`), printable bytes first. We number the bytes the same way, so that our
# ids and our tie-breaks match the library's.

# %% tags=["nbval-check-output"]
def byte_stand_ins():
    """GPT-2's table: each byte → a printable character that stands for it (space → 'Ġ')."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


STAND_IN = byte_stand_ins()
BYTE_ORDER = sorted(range(256), key=lambda b: STAND_IN[b])  # the library's numbering of the bytes
BYTE_ID = {b: i for i, b in enumerate(BYTE_ORDER)}


def words_of(text):
    """{word as a tuple of byte ids: how often it occurs}."""
    return Counter(tuple(BYTE_ID[b] for b in word.encode("utf-8")) for word in GPT2_SPLIT.findall(text))


def count_pairs(words):
    counts = Counter()
    for word, frequency in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += frequency
    return counts


def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in `ids`, scanning left to right, by `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(words, num_merges):
    """Learn up to `num_merges` merges. Returns ({pair: new id} in learning order, {id: bytes}, history)."""
    vocab = {i: bytes([b]) for i, b in enumerate(BYTE_ORDER)}
    merges, history = {}, []
    for _ in range(num_merges):
        counts = count_pairs(words)
        if not counts:  # every word is a single symbol: nothing left to merge
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent; ties → smallest ids
        new_id = len(vocab)
        words = {tuple(merge(list(w), pair, new_id)) if pair[0] in w else w: n for w, n in words.items()}
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        merges[pair] = new_id
        history.append({"pair": pair, "count": counts[pair], "corpus_tokens": sum(len(w) * n for w, n in words.items())})
    return merges, vocab, history


def readable(token: bytes) -> str:
    """A token's bytes as text; bytes that are only part of a character show as \\x.. escapes."""
    return token.decode("utf-8", errors="backslashreplace").replace(" ", "␣").replace("\n", "⏎")

# %% [markdown]
# We train on a small text — the first 200 documents of the synthetic pretraining corpus — and
# watch the first merges. The three bytes of the Chinese full stop `。` come first (every Chinese
# sentence ends with one), then common English fragments (`␣a`, `is`, `ou`…) and the bytes of other
# frequent Chinese characters; whole words and names follow.

# %% tags=["nbval-check-output"]
small_docs = [row["text"] for row in islice(read_jsonl(dataset_path("pretrain", "train"), schema="pretrain"), 200)]
small_text = "\n".join(small_docs)
words = words_of(small_text)
NUM_MERGES = 250
merges, vocab, history = train_bpe(words, NUM_MERGES)
start_tokens = sum(len(w) * n for w, n in words.items())
print(f"{len(small_text):,} characters, {start_tokens:,} bytes, {len(words):,} distinct words; learned {len(merges)} merges")
print(f"{'step':>4} {'count':>6}  merge")
for step, entry in enumerate(history[:12], start=1):
    a, b = entry["pair"]
    print(f"{step:>4} {entry['count']:>6}  {readable(vocab[a])!r} + {readable(vocab[b])!r} → {readable(vocab[a] + vocab[b])!r}")

# %% [markdown]
# The derivation said each merge shortens the corpus by the pair's count (unless the pair overlaps
# itself, like `aa` in `aaa`). Checked on every step:

# %% tags=["nbval-check-output"]
lengths = [start_tokens] + [entry["corpus_tokens"] for entry in history]
self_overlapping = sum(entry["pair"][0] == entry["pair"][1] for entry in history)
exact = sum(lengths[k] - lengths[k + 1] == entry["count"] for k, entry in enumerate(history))
print(f"N_k - N_(k+1) == f(a*, b*) on {exact} of {len(history)} steps; {self_overlapping} merges are of a symbol with itself")
assert exact >= len(history) - self_overlapping

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(range(len(lengths)), lengths)
left.set(xlabel="merges learned", ylabel="tokens in the corpus", title="each merge shortens the corpus")
right.plot(range(len(lengths)), [len(small_text) / n for n in lengths])
right.set(xlabel="merges learned", ylabel="characters per token", title="compression on the training text")
plt.tight_layout()
plt.show()

# %% [markdown]
# Encoding replays the merges: inside each word, repeatedly merge the adjacent pair that was
# learned *earliest*, until no learned pair is left. Here is one sentence cut with the first
# $k$ merges, for growing $k$ (each box is one token):

# %% tags=["nbval-check-output"]
def encode_word(ids, merges):
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))  # the earliest-learned pair
        if pair not in merges:
            break
        ids = merge(ids, pair, merges[pair])
    return ids


def bpe_encode(text, merges):
    return [t for word in GPT2_SPLIT.findall(text) for t in encode_word([BYTE_ID[b] for b in word.encode("utf-8")], merges)]


PALETTE = ["#dbeafe", "#fde68a", "#bbf7d0", "#fbcfe8", "#e9d5ff", "#fed7aa"]


def token_boxes(pieces, backgrounds=None, bold=()):
    """HTML: each piece of text in its own coloured box."""
    spans = []
    for i, piece in enumerate(pieces):
        background = backgrounds[i] if backgrounds else PALETTE[i % len(PALETTE)]
        weight = "font-weight:bold;" if i in bold else ""
        text = html.escape(piece).replace(" ", "␣").replace("\n", "⏎")
        spans.append(f'<span style="background:{background};{weight}padding:1px 2px;margin:1px;border-radius:3px;'
                     f'font-family:monospace;display:inline-block">{text}</span>')
    return "".join(spans)


sentence = next(doc for doc in small_docs if not regex.search(r"\p{Han}", doc)).split("\n")[0]
rows = []
for k in (0, 10, 50, NUM_MERGES):
    ids = bpe_encode(sentence, dict(islice(merges.items(), k)))
    rows.append(f"<p><b>{k} merges</b> — {len(ids)} tokens<br>{token_boxes([readable(vocab[i]) for i in ids])}</p>")
    print(f"{k:>3} merges: {len(ids)} tokens")
display(HTML("".join(rows)))

# %% [markdown]
# ### Does it agree with the library?
#
# Now the same algorithm from `tokenizers` (Rust, incremental pair counts — thousands of times faster):
# byte-level BPE with GPT-2's pre-tokenizer, trained on the same text for the same number of merges.
# It should learn the *same merges in the same order*, and encode held-out text to the *same ids*.

# %% tags=["nbval-check-output"]
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

library = Tokenizer(models.BPE())
library.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex + byte stand-ins
library.decoder = decoders.ByteLevel()
library.train_from_iterator([small_text], trainers.BpeTrainer(
    vocab_size=256 + NUM_MERGES, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))

library_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(library.to_str())["model"]["merges"]]
stand_in = lambda token: "".join(STAND_IN[b] for b in token)
our_merges = [(stand_in(vocab[a]), stand_in(vocab[b])) for a, b in merges]
held_out = "\n".join(row["text"] for row in islice(read_jsonl(dataset_path("pretrain", "val"), schema="pretrain"), 50))
our_ids, library_ids = bpe_encode(held_out, merges), library.encode(held_out).ids
print(f"merges identical: {our_merges == library_merges} ({len(our_merges)} merges)")
print(f"held-out text ({len(held_out):,} characters): {len(our_ids):,} tokens from scratch, {len(library_ids):,} from tokenizers, identical ids: {our_ids == library_ids}")
assert our_merges == library_merges and our_ids == library_ids

# %% [markdown]
# ## 3. The book's tokenizer
#
# `minimind.tokenizer.train_tokenizer` trains the same kind of tokenizer with `tokenizers`, with
# three differences from the one above, each a deliberate choice:
#
# - **Special tokens** at fixed ids: `<|endoftext|>` = 0 (padding), `<|im_start|>` = 1 and
#   `<|im_end|>` = 2 (they delimit chat turns), as in MiniMind2, then `<think>`, `</think>`,
#   `<answer>`, `</answer>` = 3…6, each a *single* token. MiniMind2 has no such tokens: it cuts
#   `<think>` into `<`, `th`, `ink`, `>`, so its reasoning loss, which up-weights those ids, also
#   up-weights every `th` in ordinary text.
# - **Digits one per token**: the number 2048 is always `2`, `0`, `4`, `8`, so arithmetic sees every
#   digit the same way wherever it stands.
# - **Each Chinese character a pre-token of its own**: GPT-2's `\p{L}+` treats `Pelum住在` as one
#   word, so a name would be another token in Chinese than in English; and BPE, left to merge runs of
#   Chinese characters, turns frequent phrases into single tokens — in this corpus "是一名水手" ("is a
#   sailor") becomes *one* token, so the fact "水手" is stored under a different token in every
#   sentence that states it, and an answer that says just "水手" uses a token the model never saw
#   the fact with (chapter 5 measures what that costs). BPE then only merges the three bytes of a
#   character into that character.
#
# So the library and the package agree on the *algorithm* (the merges above are learned the same way)
# but not on the *pre-tokenization*, and their tokens differ exactly where those rules apply:

# %% tags=["nbval-check-output"]
from minimind.tokenizer import SPECIAL_TOKENS, MiniMindTokenizer, train_tokenizer

from minimind.data.jsonl import texts_from_jsonl
from minimind.train.tokenizer import BOOK_CORPUS

# the pretraining corpus and the fine-tuning conversations: every character a later model writes gets a token
corpus = [text for name in BOOK_CORPUS for text in texts_from_jsonl(dataset_path(name, "train"))]
tokenizer = train_tokenizer(corpus, vocab_size=2048)
print(f"trained on {len(corpus):,} texts of {', '.join(BOOK_CORPUS)} ({sum(map(len, corpus)):,} characters): "
      f"{tokenizer.vocab_size} tokens")
print("special tokens:", {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS})

example = f"{person.name}住在{person.city}, {person.name} is {person.age}. 2048 + 17 = 2065 <think>"
gpt2_style = Tokenizer(models.BPE())
gpt2_style.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
gpt2_style.decoder = decoders.ByteLevel()
gpt2_style.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2048, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                           special_tokens=SPECIAL_TOKENS[:3], show_progress=False))
gpt2_pieces = [gpt2_style.decode([i]) for i in gpt2_style.encode(example).ids]
our_pieces = tokenizer.tokens(example)
print(f"GPT-2 pre-tokenization: {len(gpt2_pieces)} tokens; minimind.tokenizer: {len(our_pieces)} tokens")
display(HTML(f"<p><b>GPT-2 pre-tokenization</b><br>{token_boxes(gpt2_pieces)}</p>"
             f"<p><b>minimind.tokenizer</b><br>{token_boxes(our_pieces)}</p>"))
assert tokenizer.encode("<think>") == [3] and all(d in our_pieces for d in "2048")

# %% [markdown]
# The chapters do not train their tokenizer inline: `zoo.tokenizer()` (the zoo's "tokenizer" artefact) builds it once with
# this same call (`vocab_size=2048` on the same texts) and caches it. The two are the same tokenizer:

# %% tags=["nbval-check-output"]
from minimind import zoo

book_tokenizer = zoo.tokenizer()
assert book_tokenizer.vocab_size == tokenizer.vocab_size
assert book_tokenizer.encode(held_out) == tokenizer.encode(held_out)
print(f"zoo.tokenizer(): {book_tokenizer.vocab_size} tokens, identical ids on the held-out text")

# %% [markdown]
# ### The vocabulary saturates
#
# We asked for 2048 tokens and got fewer. BPE stops when no adjacent pair is left, that is when
# every distinct word of the corpus has become a single token — and a synthetic corpus has few
# distinct words. Asking for more changes nothing; a 6400-token vocabulary (MiniMind2's) needs a
# larger, more varied corpus.

# %% tags=["nbval-check-output"]
requested = [300, 512, 1024, 2048, 4096, 6400]
obtained = [train_tokenizer(corpus, vocab_size=size).vocab_size for size in requested]
distinct_words = len({word for text in corpus for word, _ in tokenizer.backend.pre_tokenizer.pre_tokenize_str(text)})
for size, got in zip(requested, obtained):
    print(f"requested {size:>5} → {got:>5} tokens")
print(f"the corpus has {distinct_words:,} distinct pre-tokenized words")
assert obtained[-1] == obtained[-2] < 4096 and obtained[0] == 300

plt.figure(figsize=(5, 3.5))
plt.plot(requested, requested, "--", color="grey", label="requested")
plt.plot(requested, obtained, "o-", label="obtained")
plt.xlabel("requested vocabulary size")
plt.ylabel("vocabulary size")
plt.title("BPE vocabulary saturates on a small corpus")
plt.legend()
plt.show()

# %% [markdown]
# ## 4. Compression on held-out English and Chinese
#
# How much text does a token carry? We measure characters per token on two kinds of held-out
# text: *in-domain* (the validation split of the synthetic corpus: new biographies of the same
# people, never seen in training) and *out-of-domain* (two paragraphs about tokenizers, written for
# this chapter), in each language, for the byte-level baseline (no merges) and for tokenizers with
# 512, 1024 and 2048 requested tokens.

# %% tags=["nbval-check-output"]
def has_chinese(text):
    return regex.search(r"\p{Han}", text) is not None


validation = [row["text"] for row in read_jsonl(dataset_path("pretrain", "val"), schema="pretrain")]
out_of_domain = {
    "en": ("A tokenizer turns text into a sequence of integers. Byte-pair encoding starts from single bytes and "
           "repeatedly merges the most frequent neighbouring pair, so common words become single tokens while rare "
           "words are spelled out in smaller pieces. The result is a compromise between short sequences and a small "
           "vocabulary, and it decides how much text fits into the context window of a language model."),
    "zh": ("分词器把文本变成一串整数。字节对编码从单个字节开始，反复合并出现最频繁的相邻字节对，于是常见的词变成一个词元，"
           "罕见的词则被拆成更小的片段。这是在较短的序列和较小的词表之间的折中，它决定了语言模型的上下文窗口里能放下多少文字。"),
}
test_texts = {
    ("in-domain", "en"): "\n".join(t for t in validation if not has_chinese(t)),
    ("in-domain", "zh"): "\n".join(t for t in validation if has_chinese(t)),
    ("out-of-domain", "en"): out_of_domain["en"],
    ("out-of-domain", "zh"): out_of_domain["zh"],
}
tokenizers_by_name = {"bytes": None, **{f"BPE {size}": train_tokenizer(corpus, vocab_size=size) for size in (512, 1024)},
                      "BPE 2048": tokenizer}
compression = {}
print(f"{'':>22}" + "".join(f"{name:>11}" for name in tokenizers_by_name))
for key, text in test_texts.items():
    row = {}
    for name, tok in tokenizers_by_name.items():
        n_tokens = len(text.encode("utf-8")) if tok is None else len(tok.encode(text))
        row[name] = len(text) / n_tokens
    compression[key] = row
    print(f"{key[0] + ' ' + key[1]:>22}" + "".join(f"{value:>11.2f}" for value in row.values()))

# %% tags=["nbval-check-output"]
fig, ax = plt.subplots(figsize=(8, 3.8))
names = list(tokenizers_by_name)
width = 0.8 / len(names)
for j, name in enumerate(names):
    ax.bar([i + j * width for i in range(len(test_texts))], [compression[key][name] for key in test_texts], width, label=name)
ax.set_xticks([i + 0.4 - width / 2 for i in range(len(test_texts))], [f"{d}\n{lang}" for d, lang in test_texts])
ax.set_ylabel("characters per token")
ax.set_ylim(0, 1.25 * max(max(row.values()) for row in compression.values()))  # room for the legend
ax.set_title("compression on held-out text")
ax.legend(ncol=4, fontsize=8, loc="upper right")
plt.show()

in_en, in_zh = compression[("in-domain", "en")], compression[("in-domain", "zh")]
out_en, out_zh = compression[("out-of-domain", "en")], compression[("out-of-domain", "zh")]
assert in_en["bytes"] == 1.0 and abs(out_zh["bytes"] - 1 / 3) < 1e-9  # ASCII: one byte a character; Chinese: three
assert in_zh["bytes"] < 0.6  # the Chinese biographies also hold Latin names and digits, one byte each
assert in_en["bytes"] < in_en["BPE 512"] < in_en["BPE 1024"] < in_en["BPE 2048"]
assert in_zh["bytes"] < in_zh["BPE 512"] < in_zh["BPE 1024"] < in_zh["BPE 2048"]
assert out_en["BPE 2048"] < in_en["BPE 2048"] / 1.5 and out_zh["BPE 2048"] < in_zh["BPE 2048"] / 1.5

# %% [markdown]
# Three things to read off the table and plot:
#
# - **Bytes are expensive for Chinese.** A Chinese character is three bytes, so the byte baseline
#   carries a third of a character per token; BPE recovers far more on Chinese than on English
#   because it merges the three bytes of each frequent character first, then frequent words.
# - **More merges, more compression, with diminishing returns** — until the vocabulary saturates.
# - **A tokenizer is only as good as its corpus.** On the synthetic world it reaches over three
#   characters per token; on ordinary prose it falls far back towards the byte baseline, because the
#   words of that prose were never merged. For comparison, upstream's README reports about 1.5–1.7
#   Chinese and 4–5 English characters per token for MiniMind2's 6400-token tokenizer, trained on real
#   web and chat text (a figure quoted, not measured here: the book does not ship that tokenizer).

# %% [markdown]
# ## 5. The chat template and the loss mask
#
# A chat model sees a conversation as one string with markers. MiniMind uses the ChatML format of
# MiniMind2: each turn is `<|im_start|>{role}\n{content}<|im_end|>\n`, and a default system prompt
# (`You are a helpful assistant`) is added when the first message is not a system message. To make
# the model reply, the prompt ends with `<|im_start|>assistant\n` — the *generation prompt*.
# With `enable_thinking=False` an empty think block follows it (as in MiniMind2); with
# `enable_thinking=True` — this book's extension — `<think>\n` follows, so a reasoning model starts
# inside its think block.

# %% tags=["nbval-check-output"]
sft_rows = list(islice(read_jsonl(dataset_path("sft", "train"), schema="sft"), 400))
conversation = next(row["conversations"] for row in sft_rows if len(row["conversations"]) >= 4)
print(tokenizer.apply_chat_template(conversation))
question = conversation[:1]
for thinking in (None, False, True):
    prompt = tokenizer.apply_chat_template(question, add_generation_prompt=True, enable_thinking=thinking)
    print(f"enable_thinking={thinking!s:>5}: the prompt ends with {prompt[prompt.rindex('<|im_start|>'):]!r}")

# %% [markdown]
# In supervised fine-tuning the model is trained to predict only the assistant's words: the system
# prompt and the user's questions are context, not targets. `render_conversation` returns the ids
# and this **loss mask** from one rendering, so the two cannot drift apart. `mask[i] = 1` marks the
# tokens of each assistant reply, its `<|im_end|>` (so the model learns to stop) and the `\n` after
# it — upstream MiniMind supervises that newline too, and it costs nothing because generation stops
# at `<|im_end|>`. Green tokens below are trained on; grey ones are context; bold ones are special.

# %% tags=["nbval-check-output"]
ids, mask = tokenizer.render_conversation(conversation)
pieces = [tokenizer.decode([i]) for i in ids]
backgrounds = ["#bbf7d0" if m else "#e5e7eb" for m in mask]
special = {i for i, token_id in enumerate(ids) if token_id < len(SPECIAL_TOKENS)}
display(HTML(f'<div style="line-height:2">{token_boxes(pieces, backgrounds, bold=special)}</div>'))
print(f"{len(ids)} tokens, {sum(mask)} supervised")

supervised_runs, run = [], []
for token_id, m in zip(ids, mask):
    if m:
        run.append(token_id)
    elif run:
        supervised_runs.append(tokenizer.decode(run))
        run = []
supervised_runs += [tokenizer.decode(run)] if run else []
replies = [m["content"] + "<|im_end|>\n" for m in conversation if m["role"] == "assistant"]
print("supervised spans:", supervised_runs)
assert supervised_runs == replies
assert ids == tokenizer.encode(tokenizer.apply_chat_template(conversation))

# %% [markdown]
# The tokenizer saves to the two files `transformers` reads (`tokenizer.json` and
# `tokenizer_config.json`, with the template in Jinja). Loaded back by `transformers`, it renders,
# encodes and masks exactly as our code does — the mask through transformers' own
# `return_assistant_tokens_mask`. And the same `MiniMindTokenizer` class loads MiniMind2's released
# `tokenizer.json`, so upstream weights work with this package too.

# %% tags=["nbval-check-output"]
from transformers import AutoTokenizer

with tempfile.TemporaryDirectory() as folder:
    tokenizer.save(folder)
    print(sorted(p.name for p in Path(folder).iterdir()))
    hf_tokenizer = AutoTokenizer.from_pretrained(folder)
    rendered = hf_tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
assert hf_tokenizer.apply_chat_template(conversation, tokenize=False) == tokenizer.apply_chat_template(conversation)
assert list(rendered["input_ids"]) == ids and list(rendered["assistant_masks"]) == mask
print("transformers renders, encodes and masks the conversation exactly as minimind.tokenizer does")

# %% [markdown]
# ## 6. A token explorer
#
# Type anything — English, Chinese, numbers, emoji, the special tokens — and see how the book's
# tokenizer cuts it. (In the static website the box shows the text it was saved with; run the
# notebook to type.)

# %% tags=["nbval-check-output"]
import ipywidgets as widgets


def explore(text):
    token_ids = tokenizer.encode(text)
    pieces = [tokenizer.decode([i]) for i in token_ids]
    ratio = len(text) / max(len(token_ids), 1)
    return (f"<p>{len(text)} characters → {len(token_ids)} tokens ({ratio:.2f} characters per token)</p>"
            f"{token_boxes(pieces)}<p style='font-family:monospace;font-size:small'>{token_ids}</p>")


text_box = widgets.Text(value=f"{person.name}住在{person.city}。{person.name} is {person.age}! 🙂 <think>", description="text",
                        layout=widgets.Layout(width="90%"))
view = widgets.HTML(value=explore(text_box.value))
text_box.observe(lambda change: setattr(view, "value", explore(change["new"])), names="value")
display(widgets.VBox([text_box, view]))

# %% [markdown]
# ## 7. From the command line
#
# The same tokenizer, trained by the package's first pipeline stage (`python -m minimind.train.tokenizer`,
# or `minimind tokenizer`) on the synthetic pretraining corpus:

# %% tags=["nbval-check-output"]
with tempfile.TemporaryDirectory() as folder:
    result = subprocess.run([sys.executable, "-m", "minimind.train.tokenizer", "--vocab_size", "2048", "--out", "tok"],
                            cwd=folder, capture_output=True, text=True, check=True)
    print(result.stdout.strip())
    from_cli = MiniMindTokenizer.from_pretrained(Path(folder) / "tok")
assert from_cli.encode(held_out) == tokenizer.encode(held_out)

# %% [markdown]
# ## Exercises
#
# ```{exercise} Write merge
# :label: ex-01-merge
# Write `my_merge(ids, pair, new_id)` that returns a new list in which every occurrence of the
# adjacent pair `pair` in `ids`, scanned from left to right, is replaced by `new_id`. Check it with
# `minimind.checks.tokenizer.check_merge(my_merge)`. What should `my_merge([5, 5, 5], (5, 5), 9)` return, and why?
# ```
#
# ```{solution} ex-01-merge
# :class: dropdown
# Walk through the list with an index; when the pair starts at the index, emit `new_id` and jump
# two places, otherwise copy one id and move one place. Because the scan consumes both ids of a
# match, overlapping occurrences are merged left to right: `[5, 5, 5]` becomes `[9, 5]`, not `[9, 9]`.
# The `merge` function in section 2 is one solution; the cell below checks it.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.tokenizer import check_assistant_mask, check_merge, check_pair_counts

check_merge(merge)
check_pair_counts(count_pairs)

# %% [markdown]
# ```{exercise} The loss mask, the upstream way
# :label: ex-01-mask
# Upstream MiniMind does not use character offsets: it searches the token ids for the ids of
# `<|im_start|>assistant\n` and marks everything from the next token up to and including the ids of
# `<|im_end|>\n`. Write `upstream_mask(tokenizer, messages)` that does this on
# `tokenizer.encode(tokenizer.apply_chat_template(messages))` and check it with
# `check_assistant_mask(upstream_mask, tokenizer)`. When could searching for ids fail where
# `render_conversation` does not?
# ```
#
# ```{solution} ex-01-mask
# :class: dropdown
# See the cell below. The search works as long as the header and `<|im_end|>\n` are tokenized the
# same way inside the conversation as on their own. Byte-level BPE can merge across the boundary
# when a reply starts with whitespace (the `\n` of the header and the reply's leading spaces can
# become one token), and then the header's ids never appear and the reply is silently unsupervised.
# `render_conversation` maps every token to the characters it came from, so it cannot miss a reply.
# ```

# %% tags=["nbval-check-output"]
def upstream_mask(tokenizer, messages):
    ids = tokenizer.encode(tokenizer.apply_chat_template(messages))
    header, end = tokenizer.encode("<|im_start|>assistant\n"), tokenizer.encode("<|im_end|>\n")
    mask, i = [0] * len(ids), 0
    while i < len(ids):
        if ids[i:i + len(header)] == header:
            start = i + len(header)
            stop = start
            while stop < len(ids) and ids[stop:stop + len(end)] != end:
                stop += 1
            for j in range(start, min(stop + len(end), len(ids))):
                mask[j] = 1
            i = stop + len(end)
        else:
            i += 1
    return mask


check_assistant_mask(upstream_mask, tokenizer)

# %% [markdown]
# ```{exercise} Why does Chinese gain more?
# :label: ex-01-chinese
# In section 4, compare how many times BPE multiplies the byte baseline's characters per token on
# the Chinese validation text and on the English one. Explain the difference. Then explain why both
# fall so much on the out-of-domain paragraphs.
# ```
#
# ```{solution} ex-01-chinese
# :class: dropdown
# Each Chinese character costs three bytes, so the merges that join the bytes of frequent characters
# triple the compression of Chinese at once — and that is all our tokenizer does with Chinese, since
# it never merges two characters. An English letter is already one byte, so BPE gains on English only
# by joining letters into words, which it does far more (over three characters per token in the
# domain: the book's Chinese text also holds Latin names and digits). On out-of-domain
# text most words were never seen in training: no merges exist for them, and they fall back to short
# pieces and, for rare Chinese characters, to raw bytes.
# ```
#
# ```{exercise} Digits and arithmetic
# :label: ex-01-digits
# Train a tokenizer on `corpus` with `train_tokenizer(corpus, vocab_size=2048, split_digits=False)`.
# How are `"17 + 925 = 942"` and `"2048"` tokenized now? How many tokens of that vocabulary contain a
# digit, and how many with `split_digits=True`? Why might a small model find column addition harder
# with the first tokenizer?
# ```
#
# ```{solution} ex-01-digits
# :class: dropdown
# Without digit splitting BPE merges frequent numbers into single tokens (ages, common sums), so the
# same digit appears inside many different tokens and the digits of a number no longer line up one
# token per column. The cell below counts the tokens that contain a digit: with splitting there are
# exactly ten. A model that adds column by column must then learn, for every multi-digit token,
# which digits it contains — one digit per token makes every column look the same.
# ```

# %% tags=["nbval-check-output"]
merged_digits = train_tokenizer(corpus, vocab_size=2048, split_digits=False)
for tok, label in ((merged_digits, "split_digits=False"), (tokenizer, "split_digits=True")):
    with_digit = sum(any(ch.isdigit() for ch in tok.decode([i])) for i in range(tok.vocab_size))
    print(f"{label:>18}: {tok.tokens('17 + 925 = 942')} {tok.tokens('2048')}; {with_digit} tokens contain a digit")
assert sum(any(ch.isdigit() for ch in tokenizer.decode([i])) for i in range(tokenizer.vocab_size)) == 10

# %% [markdown]
# ```{exercise} Chinese phrases as tokens
# :label: ex-01-cjk
# Train a tokenizer with `split_cjk=False` (runs of Chinese characters become pre-tokens that BPE
# may merge, as MiniMind2's tokenizer does). How are `"Begros是一名水手。"`, `"Begros的职业是水手。"` and the
# answer `"水手"` tokenized now, and with the book's tokenizer? How many tokens of each vocabulary
# hold more than one Chinese character? Which tokenizer lets a model that read the first two
# sentences answer "水手" with a token it saw there?
# ```
#
# ```{solution} ex-01-cjk
# :class: dropdown
# The cell below prints both. With merged runs, each sentence's template words and the value share
# tokens (the value is glued to "是一名" in one sentence and to "的职业是" in the other, and stands
# alone only in the answer), so the three spellings of "水手" have nothing in common; with one
# pre-token per character the value is the same two tokens in all three. The count of
# multi-character tokens shows how much of the merged vocabulary went on phrases of the templates.
# ```

# %% tags=["nbval-check-output"]
merged_cjk = train_tokenizer(corpus, vocab_size=2048, split_cjk=False)
for tok, label in ((merged_cjk, "split_cjk=False"), (tokenizer, "split_cjk=True")):
    phrases = sum(len(regex.findall(r"\p{Han}", tok.decode([i]))) > 1 for i in range(tok.vocab_size))
    print(f"{label:>16}: " + "  ".join(str(tok.tokens(text)) for text in ("Begros是一名水手。", "Begros的职业是水手。", "水手"))
          + f"; {phrases} tokens hold several characters")
assert tokenizer.tokens("水手") == ["水", "手"]
assert any("是" in piece and "手" in piece for piece in merged_cjk.tokens("Begros是一名水手。"))  # template and value glued

# %% [markdown]
# ## Summary
#
# - Models read tokens; byte-level BPE starts from the 256 bytes (so any text can be encoded) and
#   greedily merges the most frequent adjacent pair, each merge shortening the corpus by that pair's count.
# - Our from-scratch BPE learns the same merges as `tokenizers` and encodes to the same ids, once the
#   bytes are numbered and ties broken the same way.
# - `minimind.tokenizer` adds MiniMind2's special ids, single-token reasoning tags, one-digit-per-token
#   numbers and one pre-token per Chinese character (no phrase ever becomes a token). On the synthetic
#   text its vocabulary saturates below the 2048 requested; the compression on held-out text, against
#   raw bytes, is in section 4's table — much lower on text unlike its corpus.
# - The chat template renders conversations exactly as MiniMind2's, and `render_conversation` returns
#   the ids and the loss mask — assistant replies, their `<|im_end|>` and the newline after it — from one rendering.
#
# ## Further reading
#
# - Byte-pair encoding for neural machine translation: {cite}`sennrich2016bpe`.
# - Byte-level BPE and the GPT-2 pre-tokenizer: {cite}`radford2019language`.
# - SentencePiece, a language-independent alternative that treats text as a raw stream: {cite}`kudo2018sentencepiece`.
# - How tokenizers treat languages unequally: {cite}`petrov2023unfairness`.
# - How the tokenization of numbers affects arithmetic: {cite}`singh2024tokenization`.
