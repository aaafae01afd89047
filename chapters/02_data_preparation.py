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
# # Chapter 2 — Preparing a corpus: cleaning, deduplication, conversion, statistics
#
# A model learns what its data shows it, junk included. This chapter builds the tools that turn a
# raw corpus into MiniMind's training files: filters that measure length, script, symbol noise,
# markup and repetition; exact and near-duplicate removal (MinHash with locality-sensitive
# hashing); converters from the chat formats public datasets come in; and a statistics report
# that tells you which `max_seq_len` and batch size fit the data. Each piece is built from
# scratch, checked against `minimind.data`, then run on a deliberately dirty sample of the book's
# corpus, where we know exactly what junk went in and can count what each filter takes out.
# The same commands run unchanged on upstream MiniMind's multi-gigabyte files.
#
# **Learning objectives**
#
# - name the kinds of junk real corpora contain and the measure that exposes each;
# - compute script share, symbol and markup share, repeated-line and repeated-n-gram share, and choose thresholds from their distributions;
# - derive why MinHash estimates Jaccard similarity and how LSH banding turns it into a threshold, and check both empirically;
# - run `python -m minimind.data.prepare` and account for every dropped record (kept + dropped = read);
# - convert OpenAI, ShareGPT, preference and reasoning data into MiniMind's schemas;
# - read a dataset's length statistics to choose `max_seq_len`.
#
# **Estimated time:** about 60 minutes of reading and exercises. Notebook run time: {chapter-time}`cpu`.

# %% tags=["nbval-check-output"]
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)

# %% tags=["nbval-check-output"]
import hashlib
import json
import random
import re
import tempfile
import textwrap
import unicodedata
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minimind import zoo
from minimind.data import filters as F
from minimind.data.dirty import LABEL, write_dirty_sample
from minimind.data.prepare import main as prepare
from minimind.data.prepare import run
from minimind.data.stats import collect_stats

random.seed(0)
np.random.seed(0)
# Every file this chapter writes goes into a fresh temporary folder, named relative to it.
os.chdir(tempfile.mkdtemp(prefix="minimind-ch10-"))
tokenizer = zoo.tokenizer()
print(f"tokenizer: {tokenizer.vocab_size} tokens")


def short(text, width=90):
    """One line of at most `width` characters, for printing examples."""
    flat = text.replace("\n", "⏎")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# %% [markdown]
# ## 1. What upstream did to its data
#
# MiniMind's released datasets {cite}`gong2024minimind` were cut from larger public corpora. Its
# README says how, in one sentence each:
#
# - `pretrain_hq.jsonl` (1.6 GB, 1,413,103 texts): the Chinese part of the JiangShu SFT corpus,
#   cleaned to texts shorter than 512 characters and concatenated — pretraining text made from chat data;
# - `sft_512.jsonl` (7.5 GB, 6.8 M conversations): the same corpus cleaned again — entries with
#   symbol pollution and noise removed, only conversations whose total length is under 512 kept,
#   and in the Chinese part only those where Chinese characters dominate;
# - `dpo.jsonl` (0.9 GB, 207,339 pairs): the Magpie-DPO pairs whose total length is under 3000.
#
# The scripts that did this were never released (users asked, upstream issues #4 and #268). The
# rest of this chapter builds them. The pipeline reads one record at a time and passes it through
# a chain of filters; the **first** filter that objects drops the record and is charged with it, so
# the counts add up exactly: every record read is either kept or dropped by one named filter.
# Structure comes first (a malformed record cannot be measured), then what is wrong with the
# content, then length (so junk that is also long is charged to what is wrong with it), and the
# deduplicators last.
#
# ```
# read ─► (convert) ─► structure ─► script ─► markup ─► symbols ─► repetition ─► length ─► exact dup ─► near dup ─► write + stats
#                          │           │         │          │           │           │          │            │
#                          └───────────┴─────────┴──── dropped, with line, filter and reason ──┴────────────┘
# ```
#
# ## 2. A deliberately dirty sample
#
# To see what each filter does we need data whose junk we know. `minimind.data.dirty` takes 2,000
# clean rows of the synthetic pretraining corpus and adds dirty rows until they make up a quarter
# of the sample, in equal shares of nine kinds: exact copies, near copies (a character in every eighty changed, spacing
# altered), symbol noise, leftover HTML, lines in a foreign script, boilerplate lines repeated,
# generation loops, fragments and run-ons. It labels every row with what was done to it (field
# `dirt`) and adds three lines of broken JSON, as an interrupted download would leave.

# %% tags=["nbval-check-output"]
counts = write_dirty_sample("dirty_pretrain.jsonl", "pretrain", clean_rows=2000, dirty_fraction=0.25, seed=0)
for kind, count in counts.most_common():
    print(f"{kind:>16} {count:>5}")
print(f"{'total lines':>16} {sum(counts.values()):>5}")

rows = []
for line_number, line in enumerate(Path("dirty_pretrain.jsonl").read_text(encoding="utf-8").splitlines(), start=1):
    try:
        rows.append((line_number, json.loads(line)))
    except json.JSONDecodeError:
        print(f"line {line_number} is not JSON: {line!r}")
examples = {}
for line_number, row in rows:
    examples.setdefault(row[LABEL], row["text"])
for kind, text in examples.items():
    print(f"{kind:>16}: {short(text)}")

# %% [markdown]
# ## 3. Measures, from scratch
#
# ### 3.1 Script share
#
# Upstream kept Chinese conversations "where Chinese characters dominate". To measure that, count
# only *letters* (characters for which `str.isalpha()` is true: digits, punctuation and spaces
# belong to no script) and take the share that belongs to the chosen scripts $S$:
#
# $$
# \text{share}_S(x) = \frac{\bigl|\{\, c \in x : c \text{ is a letter of a script in } S \,\}\bigr|}{\bigl|\{\, c \in x : c \text{ is a letter} \,\}\bigr|} .
# $$
#
# Unicode names every character, so the from-scratch version needs no character table: Chinese
# characters are the "CJK UNIFIED IDEOGRAPH"s (and a few "CJK COMPATIBILITY IDEOGRAPH"s), Latin
# letters are named "LATIN …". `minimind.data.filters` does the same with precompiled character
# ranges, which is much faster; the two must agree on every row of the sample.

# %% tags=["nbval-check-output"]
HAN_NAMES = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")


def share_from_scratch(text, name_prefixes):
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(unicodedata.name(c, "").startswith(name_prefixes) for c in letters) / len(letters)


texts = [row["text"] for _, row in rows]
labels = [row[LABEL] for _, row in rows]
for name_prefixes, scripts in ((HAN_NAMES, ["han"]), (HAN_NAMES + ("LATIN",), ["han", "latin"])):
    ours = [share_from_scratch(text, name_prefixes) for text in texts]
    library = [F.script_share(text, scripts) for text in texts]
    assert np.allclose(ours, library, atol=1e-12), scripts
    print(f"{'+'.join(scripts):>9}: from scratch == minimind.data.filters on all {len(texts)} rows")

# %% [markdown]
# The synthetic corpus is bilingual, and its Chinese sentences carry Latin names
# ("Sugashas住在Porrin"), so a Han-only rule would be the wrong tool here: we require that Han
# *plus* Latin letters make up at least 90 % of the letters, which only the foreign-script lines
# break.
#
# ### 3.2 Noise, markup and repetition
#
# The other measures are shares too, each made for one kind of junk:
#
# - **symbol share** — of the visible characters, those that are symbol noise: ASCII symbols other
#   than ordinary punctuation and math signs (`# $ % & @ [ ] _ { | } ~ …`), box drawing and
#   dingbats, private-use characters, the replacement character `�` left by broken decoding, emoji;
# - **markup share** — of the characters, those inside HTML tags, HTML entities and URLs
#   (`<think>`, `<answer>` and the tool tags do not count: they are the book's own format);
# - **repeated-line share** — of the characters in non-empty lines, those in lines that repeat an
#   earlier line of the same text (boilerplate pasted between paragraphs);
# - **repeated-$n$-gram share** — of the text's units (a Chinese character, or a word), those covered
#   by an $n$-gram of units that occurs more than once in the text, as in Gopher's quality rules
#   {cite}`rae2021gopher`: natural text repeats few 5-grams, a generation loop repeats nearly all.
#
# A threshold is only as good as the gap between the distributions it separates. The plot shows
# each measure on the clean rows and on the rows with the junk it targets, with the threshold the
# pipeline uses below.

# %% tags=["nbval-check-output"]
MEASURES = [  # (title, measure, the dirt it targets, threshold, keep if the value is at least the threshold)
    # a text without letters (arithmetic) has no script to judge: the filter keeps it, so it counts as 1 here
    ("han+latin share", lambda t: F.script_share(t, ["han", "latin"]) if F.letter_count(t) else 1.0, "foreign_script", 0.9, True),
    ("markup share", F.markup_share, "markup", 0.1, False),
    ("symbol share", F.symbol_share, "symbol_noise", 0.1, False),
    ("repeated-line share", F.repeated_line_share, "repeated_lines", 0.4, False),
    ("repeated 5-gram share", F.repeated_ngram_share, "repeated_ngrams", 0.8, False),
]
fig, axes = plt.subplots(1, len(MEASURES), figsize=(17, 3.4))
for ax, (title, measure, dirt, threshold, keep_above) in zip(axes, MEASURES):
    groups = {kind: [measure(t) for t, label in zip(texts, labels) if label == kind] for kind in ("clean", dirt)}
    ax.boxplot(list(groups.values()), tick_labels=list(groups), whis=(0, 100))
    ax.axhline(threshold, color="tab:red", linestyle="--", label="threshold")
    ax.set_title(title)
    clean, dirty = np.array(groups["clean"]), np.array(groups[dirt])
    caught = (dirty < threshold).mean() if keep_above else (dirty > threshold).mean()
    false_alarms = (clean < threshold).mean() if keep_above else (clean > threshold).mean()
    extreme = clean.min() if keep_above else clean.max()
    print(f"{title:>22}: catches {caught:.1%} of {dirt}, flags {false_alarms:.2%} of clean rows "
          f"(most extreme clean row {extreme:.2f})")
axes[0].legend(loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# The gaps are wide because this junk is blatant. In real data the distributions overlap, and every
# threshold trades false alarms against missed junk — even here, the full synthetic corpus holds
# one clean biography that states the same person's facts twice, with a repeated-5-gram share of
# 0.82, above the threshold. Look at what a filter drops before trusting its count.
#
# The repeated-$n$-gram share from scratch, with a `Counter` of tuples, must equal the vectorised
# version in `minimind.data.filters` (which hashes the $n$-grams with numpy) on every row.

# %% tags=["nbval-check-output"]
def repeated_ngram_share_from_scratch(text, n=5):
    units = F.text_units(text)
    if len(units) <= n:
        return 0.0
    grams = [tuple(units[i:i + n]) for i in range(len(units) - n + 1)]
    counts_of = Counter(grams)
    covered = [False] * len(units)
    for start, gram in enumerate(grams):
        if counts_of[gram] > 1:
            covered[start:start + n] = [True] * n
    return sum(covered) / len(units)


print(F.text_units("Hello, 世界 x2!"))
assert all(abs(repeated_ngram_share_from_scratch(t) - F.repeated_ngram_share(t)) < 1e-12 for t in texts)
print(f"repeated 5-gram share: from scratch == minimind.data.filters on all {len(texts)} rows")

# %% [markdown]
# ### 3.3 Exact duplicates
#
# Two records are exact duplicates when their *normalized* texts are equal: Unicode NFKC (which
# maps full-width `ＡＢＣ１２３，` to `ABC123,`), lower case, whitespace runs collapsed. Keeping the
# first copy of each needs a set of everything seen. Storing the texts themselves would hold the
# whole corpus in memory, so the library stores a 64-bit BLAKE2 digest of each in a compact numpy
# hash table (16 to 32 bytes per record); with $n$ records the chance that two different texts
# share a digest is about $n^2/2^{65}$ — $5 \times 10^{-8}$ for upstream's 1.4 M texts.

# %% tags=["nbval-check-output"]
def normalize(text):
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


first_line = {}
duplicates_from_scratch = set()
for line_number, row in rows:
    key = normalize(row["text"])
    if key in first_line:
        duplicates_from_scratch.add(line_number)
    else:
        first_line[key] = line_number

exact = F.ExactDeduplicator()
duplicates = {line_number for line_number, row in rows if exact.check(F.Sample(row, line_number))}
assert duplicates == duplicates_from_scratch
print(f"{len(duplicates)} exact duplicates, the same lines from scratch and from minimind.data.filters")
print(f"fingerprint table: {len(exact.table)} keys in {exact.table.nbytes:,} bytes")

# %% [markdown]
# ### 3.4 Near duplicates: MinHash
#
# A near copy differs in a few characters, so no hash of the whole text finds it. Cut each text
# into its set of *shingles* — overlapping runs of $k = 5$ characters — and compare sets with the
# Jaccard similarity
#
# $$
# J(A, B) = \frac{|A \cap B|}{|A \cup B|} .
# $$
#
# Comparing every pair is quadratic: $10^{12}$ pairs for a million documents. MinHash
# {cite}`broder1997resemblance` summarises each set by a short *signature*. Take a random hash
# function $h$ and look at the shingle of $A \cup B$ with the smallest hash. Every shingle of the
# union is equally likely to be that one, and $\min h(A) = \min h(B)$ exactly when it lies in the
# intersection, so
#
# $$
# P\bigl[\min_{a \in A} h(a) = \min_{b \in B} h(b)\bigr] = \frac{|A \cap B|}{|A \cup B|} = J(A, B) .
# $$
#
# With $P$ independent hash functions, the share of signature positions that agree is an unbiased
# estimate of $J$, with standard deviation $\sqrt{J(1-J)/P}$ (each position is a coin with
# probability $J$). From scratch, with BLAKE2 salted by the position as the $P$ hash functions:

# %% tags=["nbval-check-output"]
def shingles(text, k=5):
    text = normalize(text)
    return {text[i:i + k] for i in range(max(1, len(text) - k + 1))}


def minhash_from_scratch(shingle_set, num_perm=128):
    return [min(int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8, salt=i.to_bytes(8, "little")).digest(), "little")
                for s in shingle_set) for i in range(num_perm)]


def agreement(first, second):
    return float(np.mean(np.array(first) == np.array(second)))


by_kind = {}
for _, row in rows:
    by_kind.setdefault(row[LABEL], []).append(row["text"])
base = max(by_kind["clean"][:50], key=len)
edited = list(base)
for position in (10, 60, 110, 160):
    edited[position] = "X"
pairs = [("4 characters changed", base, "".join(edited)),
         ("second half rewritten", base, base[: len(base) // 2] + by_kind["clean"][1][: len(base) // 2]),
         ("unrelated", base, by_kind["clean"][2])]
hasher = F.MinHasher(num_perm=128, shingle_size=5)
for title, first, second in pairs:
    truth = F.jaccard(shingles(first), shingles(second))
    scratch = agreement(minhash_from_scratch(shingles(first)), minhash_from_scratch(shingles(second)))
    library = hasher.estimate_jaccard(hasher.signature(first), hasher.signature(second))
    print(f"{title:>22}: J = {truth:.3f}, from scratch {scratch:.3f}, minimind {library:.3f}, "
          f"±{np.sqrt(truth * (1 - truth) / 128):.3f} expected")
    assert abs(scratch - truth) < 0.12 and abs(library - truth) < 0.12

# %% [markdown]
# ### 3.5 From an estimate to a threshold: LSH banding
#
# Signatures are short but we still cannot compare all pairs. Locality-sensitive hashing
# {cite}`leskovec2020mmds` cuts each signature into $b$ *bands* of $r$ values and hashes each band
# into a table: two texts become *candidates* when any band matches in full. One band matches with
# probability $s^r$ (all $r$ positions agree), so
#
# $$
# P[\text{candidate} \mid J = s] = 1 - \left(1 - s^r\right)^b ,
# $$
#
# an S-shaped curve: near 0 for dissimilar texts, near 1 for near copies, steep around
# $s \approx (1/b)^{1/r}$. For a threshold $t$, `lsh_parameters` picks the $(b, r)$ with
# $b \cdot r \le P$ that minimises the area under the curve below $t$ (false positives) plus the
# area above it (false negatives) — the same choice as the `datasketch` library (a test checks it).
# The pipeline treats every candidate as a duplicate, so we check the curve end to end: edit
# clean rows by varying amounts, and see how often the real `NearDeduplicator` machinery puts the
# edited copy in a band with its original.

# %% tags=["nbval-check-output"]
bands, rows_per_band = F.lsh_parameters(0.8, 128)
print(f"threshold 0.8 with 128 permutations: {bands} bands x {rows_per_band} rows")
near = F.NearDeduplicator(threshold=0.8, num_perm=128)
rng = random.Random(0)
similarities, collided = [], []
for text in by_kind["clean"][:400]:
    characters = list(text)
    for _ in range(rng.randint(0, max(1, len(text) // 8))):
        characters[rng.randrange(len(characters))] = rng.choice("的是在了一人有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之")
    copy = "".join(characters)
    similarities.append(F.jaccard(shingles(text), shingles(copy)))
    keys_text = set(near.band_keys(near.hasher.signature(text)))
    collided.append(bool(keys_text & set(near.band_keys(near.hasher.signature(copy)))))
similarities, collided = np.array(similarities), np.array(collided)

grid = np.linspace(0, 1, 201)
edges = np.linspace(0.2, 1.0, 9)
centres, rates, gaps = [], [], []
for low, high in zip(edges[:-1], edges[1:]):
    inside = (similarities >= low) & (similarities < high)
    if inside.sum() >= 10:
        centre = similarities[inside].mean()
        centres.append(centre)
        rates.append(collided[inside].mean())
        gaps.append(abs(rates[-1] - np.mean(F.lsh_candidate_probability(similarities[inside], bands, rows_per_band))))
fig, ax = plt.subplots(figsize=(7, 4))
for b, r in ((bands, rows_per_band), F.lsh_parameters(0.6, 128), F.lsh_parameters(0.9, 128)):
    ax.plot(grid, F.lsh_candidate_probability(grid, b, r), label=f"b={b}, r={r} (threshold {(1 / b) ** (1 / r):.2f})")
ax.plot(centres, rates, "ko", label="measured on edited rows (b=9, r=13)")
ax.axvline(0.8, color="grey", linestyle=":")
ax.set_xlabel("Jaccard similarity of the 5-character shingles")
ax.set_ylabel("P[candidate]")
ax.legend()
plt.show()
print("largest gap between measured and predicted rate in a bin:", f"{max(gaps):.3f}")
assert max(gaps) < 0.15

# %% [markdown]
# ## 4. The pipeline on the dirty sample
#
# `python -m minimind.data.prepare pipeline` chains all of it. Thresholds are flags; here the
# length limits fit the synthetic corpus (its longest clean row has a few hundred characters;
# upstream's pretraining limit was 511), `--skip_bad` counts the broken JSON lines as dropped
# instead of stopping at the first one, and `--dropped` keeps every dropped record with its line,
# filter and reason. The same call from a shell is `python -m minimind.data.prepare pipeline
# dirty_pretrain.jsonl clean_pretrain.jsonl --skip_bad …`.

# %% tags=["nbval-check-output"]
PIPELINE_FLAGS = ["--skip_bad", "--min_chars", "20", "--max_chars", "1000", "--scripts", "han,latin",
                  "--min_script_share", "0.9", "--no_progress"]
prepare(["pipeline", "dirty_pretrain.jsonl", "clean_pretrain.jsonl", "--dropped", "dropped_pretrain.jsonl", *PIPELINE_FLAGS])

# %% [markdown]
# Every dropped record is in `dropped_pretrain.jsonl` with the filter that took it, so we can
# cross the *label* of each record (what we did to it) with its *fate* (what the pipeline did).


# %% tags=["nbval-check-output"]
def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def fate_table(clean_path, dropped_path):
    table = Counter()
    for row in read_jsonl(dropped_path):
        table[(row["record"][LABEL] if row["record"] else "broken_json", row["filter"])] += 1
    for row in read_jsonl(clean_path):
        table[(row[LABEL], "kept")] += 1
    return table


def print_table(table):
    kinds = sorted({kind for kind, _ in table}, key=lambda k: (k != "clean", k))
    fates = sorted({fate for _, fate in table}, key=lambda f: (f == "kept", f))
    corner = "dirt / fate"
    print(f"{corner:>18}" + "".join(f"{fate[:10]:>11}" for fate in fates))
    for kind in kinds:
        print(f"{kind:>18}" + "".join(f"{table.get((kind, fate), 0) or '.':>11}" for fate in fates))


table = fate_table("clean_pretrain.jsonl", "dropped_pretrain.jsonl")
print_table(table)
TARGET = {"exact_dup": "exact_dup", "markup": "markup", "symbol_noise": "symbols", "foreign_script": "script",
          "repeated_lines": "repeated_lines", "repeated_ngrams": "repeated_ngrams", "too_short": "chars",
          "too_long": "chars", "broken_json": "bad_input"}
for kind, fate in TARGET.items():
    assert table[(kind, fate)] == counts[kind], kind
near_recall = table[("near_dup", "near_dup")] / counts["near_dup"]
clean_kept = table[("clean", "kept")] / counts["clean"]
print(f"near copies caught: {near_recall:.1%}; clean rows kept: {clean_kept:.1%}")
assert near_recall > 0.85 and clean_kept > 0.98

# %% [markdown]
# Each kind of dirt went, in full, to the filter made for it, with two exceptions worth
# understanding. Some near copies pass: short rows changed in one character fall to a Jaccard of
# about 0.85, where the S-curve above gives a candidate only most of the time. And some *clean*
# rows are dropped as duplicates: the synthetic corpus itself holds a hundred templated greeting
# dialogues, several of them identical or nearly so — real duplicates that no label announced.
# The first dropped record of each filter:

# %% tags=["nbval-check-output"]
dropped_rows = read_jsonl("dropped_pretrain.jsonl")
shown = set()
for row in dropped_rows:
    if row["filter"] not in shown:
        shown.add(row["filter"])
        text = row["record"]["text"] if row["record"] else ""
        print(f"{row['filter']:>15} line {row['line']:>4}: {row['reason']}\n{'':>17}{short(text, 100)!r}")

# %% [markdown]
# A filter is any object with a `name`, a `description` and a `check(sample)` that returns `None`
# to keep the sample or a reason to drop it, so the chain is easy to extend. Here a filter of our
# own drops the greeting dialogues, run with `minimind.data.prepare.run` from Python; an explorer
# below lets you page through what each filter of the main run dropped.

# %% tags=["nbval-check-output"]
greetings = F.FunctionFilter("greetings", "no greeting dialogues",
                             lambda sample: "greeting" if sample.text.startswith("system:") else None)
summary = run("clean_pretrain.jsonl", "no_greetings.jsonl", [greetings])
print(summary.format())
assert summary.kept + summary.dropped["greetings"] == summary.read

# %% tags=["nbval-check-output"]
import html

import ipywidgets as widgets
from IPython.display import display

by_filter = {}
for row in dropped_rows:
    by_filter.setdefault(row["filter"], []).append(row)


def describe_dropped(filter_name, index):
    chosen = by_filter[filter_name]
    row = chosen[min(index, len(chosen) - 1)]
    text = row["record"]["text"] if row["record"] else "(not JSON)"
    body = html.escape(textwrap.fill(text[:600], 100))
    return f"<b>{filter_name}</b>: {len(chosen)} dropped; line {row['line']}: {html.escape(row['reason'])}<pre>{body}</pre>"


filter_box = widgets.Dropdown(options=sorted(by_filter), value="markup", description="filter")
index_box = widgets.IntSlider(min=0, max=20, value=0, description="example")
view = widgets.HTML(value=describe_dropped(filter_box.value, index_box.value))


def refresh(_change):
    view.value = describe_dropped(filter_box.value, index_box.value)


filter_box.observe(refresh, names="value")
index_box.observe(refresh, names="value")
display(widgets.VBox([widgets.HBox([filter_box, index_box]), view]))

# %% [markdown]
# ## 5. Statistics: choosing `max_seq_len`
#
# Before training, look at how long the samples are *in tokens*, counted the way training sees
# them: for a pretraining row the dataset adds BOS and EOS around the text; for a conversation
# the whole chat template counts. A sample longer than `max_seq_len` is cut, and every sample
# shorter than it is padded — the padding is compute spent on nothing. `collect_stats` measures
# both while streaming the file once (4 bytes per sample per length), and with a tokenizer it
# counts tokens; without one (`--tokenizer` not given on the command line) it counts characters,
# which overstate the tokens.

# %% tags=["nbval-check-output"]
report = collect_stats("clean_pretrain.jsonl", tokenizer, max_seq_lens=(64, 128, 256))
print(report.format())
fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
report.plot(axes)
fig.tight_layout()
plt.show()
saved = report.save("stats_pretrain")
print("saved:", ", ".join(path.name for path in saved.values()))
characters_per_token = report.char_lengths.sum() / (report.lengths - 2).sum()
print(f"{characters_per_token:.2f} characters per token on the cleaned corpus")
assert report.truncated(256) < 0.02 * report.count and report.truncated(128) > 0.3 * report.count
assert report.truncated(64) > 0.8 * report.count and report.padding_share(256) > 0.4

# %% [markdown]
# Almost every cleaned row fits in 256 tokens (the longest, documents with worked problems, reach
# about 270), a limit of 128 would cut more than a third of them and 64 most; but padding every row
# to 256 would make about half of each batch padding. That is why the book's pretraining *packs*
# rows end to end into full 128-token sequences by default: a long row carries on in the next
# sequence instead of being cut, and no position is padding (`--packing false` pads one row per
# sequence, as upstream does). Upstream's 511-character limit with its 340-token
# `max_seq_len` encodes the same calculation for Chinese at about 1.5 characters per token. In the
# script mix, "mixed" rows are the Chinese biographies, whose Latin names make neither script
# dominant (section 6.3). The same report
# from a shell: `python -m minimind.data.prepare stats FILE --tokenizer DIR --max_seq_len 340 512 --out stats/`.
#
# ## 6. Conversations
#
# ### 6.1 Structure and role order
#
# Conversations add their own junk: empty conversations, empty messages, turns out of order (a
# reply without a question, two user turns in a row, a conversation ending on the user). The
# structural filters come first in the chain. The SFT sample also holds run-on conversations
# (other conversations' turns appended), for the token-length filter, which counts the rendered
# chat template: the longest clean conversation here renders to fewer than 100 tokens.

# %% tags=["nbval-check-output"]
sft_counts = write_dirty_sample("dirty_sft.jsonl", "sft", clean_rows=1500, dirty_fraction=0.25, seed=1)
tokenizer_dir = zoo.path("tokenizer")
prepare(["pipeline", "dirty_sft.jsonl", "clean_sft.jsonl", "--dropped", "dropped_sft.jsonl", "--skip_bad",
         "--scripts", "han,latin", "--min_script_share", "0.9", "--tokenizer", str(tokenizer_dir), "--max_tokens", "128",
         "--no_progress"])
sft_table = fate_table("clean_sft.jsonl", "dropped_sft.jsonl")
print_table(sft_table)
for kind, fate in {"empty_conversation": "conversation_format", "empty_message": "conversation_format",
                   "role_order": "role_order", "markup": "markup", "foreign_script": "script", "too_long": "tokens"}.items():
    assert sft_table[(kind, fate)] == sft_counts[kind], kind

# %% tags=["nbval-check-output"]
reasons_shown = set()
for row in read_jsonl("dropped_sft.jsonl"):
    kind = re.sub(r"\d+", "N", row["reason"]) if row["filter"] != "tokens" else "tokens"
    if row["filter"] in ("role_order", "conversation_format", "tokens") and kind not in reasons_shown:
        reasons_shown.add(kind)
        messages = row["record"]["conversations"]
        turns = [f"{m['role']}: {short(m['content'], 24)!r}" for m in messages[:4]]
        more = f" … {len(messages) - 4} more turns" if len(messages) > 4 else ""
        print(f"{row['filter']:>19}: {row['reason']}\n{'':>21}[{', '.join(turns)}]{more}")

# %% [markdown]
# Note the clean rows dropped as near duplicates. Short templated exchanges ("Hi!" → "Hello! How
# can I help you today?", "Hello!" → the same reply) really are near copies of each other. The
# deduplicators compare conversations *without* their system prompt: the synthetic data, like
# much real SFT data, puts the same few system prompts in front of many short exchanges, and with
# the prompt included two different questions about two different people looked like near
# copies. A filter's definition of "the same" is a modelling decision, not a detail.
#
# ### 6.2 Conversion
#
# Public chat data comes in a handful of formats. `minimind.data.convert` turns each into
# MiniMind's schemas — and back, which the tests use to prove nothing is lost:

# %% tags=["nbval-check-output"]
from minimind.data import convert as C

foreign = {
    "OpenAI messages": {"messages": [{"role": "developer", "content": "Be brief."},
                                     {"role": "user", "content": [{"type": "text", "text": "Who are you?"}]},
                                     {"role": "assistant", "content": "MiniMind."}]},
    "ShareGPT": {"system": "Be brief.", "conversations": [{"from": "human", "value": "Who are you?"},
                                                          {"from": "gpt", "value": "MiniMind."}]},
    "preference strings": {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome."},
    "R1-style reasoning": {"messages": [{"role": "user", "content": "12+30?"},
                                        {"role": "assistant", "content": "<think>12+30=42</think>\n\n42"}]},
}
targets = {"OpenAI messages": "minimind", "ShareGPT": "minimind", "preference strings": "dpo", "R1-style reasoning": "reasoning"}
for name, record in foreign.items():
    converted = C.convert_record(record, targets[name])
    print(f"{name} ({C.detect_record_format(record)}) → {targets[name]}:\n  {json.dumps(converted, ensure_ascii=False)}")
assert C.minimind_to_sharegpt(C.sharegpt_to_minimind(foreign["ShareGPT"])) == foreign["ShareGPT"]

# %% [markdown]
# Upstream built its pretraining text from an SFT corpus: the contents of each conversation joined,
# short texts concatenated. `convert --to pretrain --pack_chars N` does both: it joins consecutive
# texts while they fit in N characters (a text longer than N on its own stays alone). Packing
# changes how many records are *written*, not how many were read and kept.

# %% tags=["nbval-check-output"]
prepare(["convert", "clean_sft.jsonl", "sft_as_pretrain.jsonl", "--to", "pretrain", "--pack_chars", "200", "--no_progress"])
packed = [row["text"] for row in read_jsonl("sft_as_pretrain.jsonl")]
print(short(packed[0], 200))
unpacked = [C.sft_to_pretrain(row)["text"] for row in read_jsonl("clean_sft.jsonl")]
assert "\n".join(packed) == "\n".join(unpacked)  # packing joins texts; it loses and reorders nothing
assert sum(len(text) > 200 for text in packed) == sum(len(text) > 200 for text in unpacked)  # only lone long texts exceed

# %% [markdown]
# ### 6.3 Upstream's "mostly Chinese" rule on a bilingual corpus
#
# Applied to our corpus, `--scripts han --min_script_share 0.5` keeps the rows whose letters are at
# least half Chinese. English rows go, as intended — but look at the Chinese ones: every sentence
# of a biography repeats an invented *Latin* name ("Fapastu住在Ferrow。"), so the names take up
# about half of the letters and the rule drops about half of the Chinese rows too, while 0.3 keeps
# nearly all of them. A share threshold
# measures letters, not meaning; check it on the data before trusting it.

# %% tags=["nbval-check-output"]
clean_texts = [row["text"] for row in read_jsonl("clean_pretrain.jsonl")]
han = np.array([F.cjk_share(text) for text in clean_texts if F.letter_count(text)])
chinese = han[han > 0]  # rows with any Chinese character
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.hist(han, bins=40, color="tab:blue")
ax.axvline(0.5, color="tab:red", linestyle="--", label="min share 0.5")
ax.set_xlabel("Han share of the letters")
ax.set_ylabel("rows")
ax.legend()
plt.show()
print(f"{len(han)} rows with letters, {len(chinese)} of them with Chinese; median Han share of those {np.median(chinese):.2f}")
for threshold in (0.5, 0.3):
    print(f"Han share >= {threshold}: keeps {(han >= threshold).mean():.1%} of all rows, {(chinese >= threshold).mean():.1%} of the Chinese ones")
assert (chinese >= 0.5).mean() < 0.6 and (chinese >= 0.3).mean() > 0.95

# %% [markdown]
# ## 7. At scale
#
# Everything above streams: one record in memory at a time, output written to a temporary file
# renamed into place only when the run succeeds. What grows with the corpus is the deduplication
# state — a 64-bit key per kept record for exact duplicates and one per band for near duplicates,
# 16 to 32 bytes each in `FingerprintTable` — and the statistics, 8 bytes per record. Upstream's
# recipes, on its own files:
#
# ```bash
# # pretrain_hq.jsonl: the Chinese part of an SFT corpus, as texts under 512 characters, packed
# python -m minimind.data.prepare pipeline sft_zh.jsonl pretrain_hq.jsonl --to pretrain \
#     --scripts han --min_script_share 0.5 --max_chars 511 --pack_chars 511 --dropped dropped.jsonl
# # sft_512.jsonl: no symbol noise, mostly Chinese, the whole rendered conversation under 512 tokens
# python -m minimind.data.prepare pipeline sft_raw.jsonl sft_512.jsonl --scripts han \
#     --min_script_share 0.5 --max_symbol_share 0.05 --tokenizer model/ --max_tokens 511
# # dpo.jsonl: preference pairs under 3000 characters, converted from prompt/chosen/rejected strings
# python -m minimind.data.prepare pipeline magpie_dpo.parquet dpo.jsonl --to dpo --max_chars 2999
# # what to read before training
# python -m minimind.data.prepare stats sft_512.jsonl --tokenizer model/ --max_seq_len 340 512 --out stats/
# ```
#
# The memory the deduplication tables need for upstream's pretraining set follows from those sizes:

# %% tags=["nbval-check-output"]
def table_bytes(keys):
    slots = 1 << 12
    while keys > 0.75 * slots:
        slots *= 2
    return 12 * slots


rows_upstream = 1_413_103
print(f"pretrain_hq: {rows_upstream:,} rows -> exact table {table_bytes(rows_upstream) / 2**20:.0f} MiB, "
      f"near table ({bands} bands) {table_bytes(bands * rows_upstream) / 2**20:.0f} MiB, "
      f"statistics {8 * rows_upstream / 2**20:.0f} MiB")

# %% [markdown]
# And the speed and memory, measured on generated files of random Chinese text, each run in a fresh
# process that reads its own peak resident memory (`VmHWM` in `/proc/self/status`; `getrusage`
# would report the peak of this notebook's process, which a child inherits on Linux). The full
# pipeline runs on a small file; the one without MinHash and the $n$-gram measure, whose remaining
# state is the exact-duplicate table and the statistics, runs on a file eight times larger.
# Sizes are in MB ($10^6$ bytes), memory in MiB. The speeds depend on the machine and its load, so
# the cell asserts only two things: that MinHash and the $n$-gram measure are where the time goes,
# and that streaming the large file grew memory by less than a quarter of the file's size — a run
# that kept its records would grow by about the size of the file. Its last line turns the full
# pipeline's speed into the time upstream's pretraining file would take on one core. A test
# streams a 200 MiB file through the pipeline under a fixed bound.

# %%
def write_random_corpus(path, megabytes, doc_chars=500):
    generator = np.random.default_rng(0)
    with open(path, "wb") as handle:
        while handle.tell() < megabytes * 10**6:
            codes = generator.integers(0x4E00, 0x9FA5, size=(256, doc_chars), dtype=np.uint32)
            codes[:, 11::23] = 0xFF0C  # a full-width comma now and then
            block = codes.tobytes().decode("utf-32-le")
            handle.write("".join(json.dumps({"text": block[i * doc_chars:(i + 1) * doc_chars]}, ensure_ascii=False) + "\n"
                                 for i in range(256)).encode("utf-8"))


MEASURE = """
import json, sys, time
import minimind.data.prepare, minimind.data.convert, minimind.data.stats, minimind.data.io, numpy, tqdm.auto

def peak_kib():  # this process's own high-water mark, Linux
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

base = peak_kib()
start = time.perf_counter()
rc = minimind.data.prepare.main(sys.argv[1:])
seconds = time.perf_counter() - start
print(json.dumps({"rc": rc, "seconds": seconds, "base_kib": base, "peak_kib": peak_kib()}))
"""
measured = {}
for title, megabytes, extra in (("full pipeline", 8, []),
                                ("without MinHash and n-grams", 64, ["--near_threshold", "off", "--max_repeated_ngram_share", "off"])):
    write_random_corpus("random.jsonl", megabytes)
    size_mb = Path("random.jsonl").stat().st_size / 10**6
    result = subprocess.run([sys.executable, "-c", MEASURE, "pipeline", "random.jsonl", "random_out.jsonl", "--no_progress", *extra],
                            capture_output=True, text=True, check=True)
    child = json.loads(result.stdout.strip().splitlines()[-1])
    assert child["rc"] == 0
    child["size_mb"], child["speed"], child["growth_mib"] = size_mb, size_mb / child["seconds"], (child["peak_kib"] - child["base_kib"]) / 1024
    measured[title] = child
    print(f"{title:>28}: {size_mb:5.1f} MB in {child['seconds']:4.1f} s = {child['speed']:4.1f} MB/s; "
          f"peak memory {child['base_kib'] / 1024:.0f} MiB after imports, grew by {child['growth_mib']:.1f} MiB")
full, fast = measured["full pipeline"], measured["without MinHash and n-grams"]
assert fast["speed"] > 2 * full["speed"]
assert fast["growth_mib"] * 2**20 < fast["size_mb"] * 10**6 / 4, "memory grew with the file: records kept?"
print(f"at {full['speed']:.1f} MB/s, upstream's 1.6 GB pretrain_hq.jsonl would take about {1.6e9 / 1e6 / full['speed'] / 60:.0f} minutes")

# %% [markdown]
# ## Exercises
#
# ```{exercise} The order of the filters
# :label: ex-10-order
# The pipeline charges a record to the *first* filter that drops it. (a) Does the order of the
# stateless filters (length, script, markup, symbols, repetition) change which records are kept?
# Does it change the counts? (b) Why do the two deduplicators come last? What would change if
# exact deduplication ran first?
# ```
#
# ```{solution} ex-10-order
# :class: dropdown
# (a) A stateless filter's verdict on a record does not depend on what it saw before, so the kept
# set is the intersection of what every filter keeps, whatever the order. The *counts* do depend on
# it: a record that is both too long and full of markup is charged to whichever of the two runs
# first. The pipeline runs the length filters after the content filters for that reason — in the
# SFT sample of section 6, with the token limit first, `tokens` would take most of the markup and
# loop rows, whose junk makes them longer, and the table would no longer say what was wrong with them.
# (b) The deduplicators are stateful: they remember every record they keep. Run last, they only
# store records that passed every other filter, which saves memory, and they compare clean texts.
# Run first, a junk copy could be kept while its clean twin, seen later, is dropped as its
# duplicate — and then the junk copy is dropped by a quality filter, losing both.
# ```
#
# ```{exercise} Write the script share
# :label: ex-10-script
# Write `my_cjk_share(text)`: the share of the letters of `text` that are Chinese (Han) characters,
# 0.0 for a text without letters. Check it with `minimind.checks.data.check_cjk_share(my_cjk_share)`.
# Why do digits and punctuation not count as letters?
# ```
#
# ```{solution} ex-10-script
# :class: dropdown
# `share_from_scratch(text, HAN_NAMES)` from section 3.1 is one solution; the cell below checks
# it. Digits and punctuation are shared by every script: counting them would make a Chinese text
# with many numbers look "less Chinese", and a text of digits only would have a share of 0 and be
# dropped by a rule meant to judge its language.
# ```

# %% tags=["nbval-check-output"]
from minimind.checks.data import check_cjk_share, check_lsh_probability, check_sharegpt_to_minimind

check_cjk_share(lambda text: share_from_scratch(text, HAN_NAMES))

# %% [markdown]
# ```{exercise} The S-curve
# :label: ex-10-lsh
# Write `candidate_probability(s, bands, rows)` for LSH banding and check it with
# `check_lsh_probability`. Then find, with `F.lsh_parameters`, the bands and rows for thresholds
# 0.5, 0.8 and 0.95 at 128 permutations, and explain why a higher threshold uses fewer, longer bands.
# ```
#
# ```{solution} ex-10-lsh
# :class: dropdown
# One band matches when all its $r$ values agree, with probability $s^r$; all $b$ bands fail with
# probability $(1 - s^r)^b$, so a candidate appears with probability $1 - (1 - s^r)^b$. The curve
# rises steeply near $(1/b)^{1/r}$: longer bands (larger $r$) push that point towards 1, and fewer
# bands keep it there, so a high threshold wants large $r$ and small $b$ — at 128 permutations
# 0.5 gives 25 bands of 5, 0.8 gives 9 bands of 13, 0.95 gives a few bands of many rows.
# ```

# %% tags=["nbval-check-output"]
check_lsh_probability(lambda s, b, r: 1 - (1 - s ** r) ** b)
print({threshold: F.lsh_parameters(threshold, 128) for threshold in (0.5, 0.8, 0.95)})

# %% [markdown]
# ```{exercise} A ShareGPT converter
# :label: ex-10-sharegpt
# Write `my_sharegpt_to_minimind(record)` that turns `{"conversations": [{"from", "value"}], "system"?}`
# into MiniMind's `{"conversations": [{"role", "content"}]}` (human → user, gpt → assistant, a top-level
# system prompt first), keeping the record's other fields and leaving the input unmodified. Check it
# with `check_sharegpt_to_minimind`.
# ```
#
# ```{solution} ex-10-sharegpt
# :class: dropdown
# See the cell below; `minimind.data.convert.sharegpt_to_minimind` also accepts the other names
# ShareGPT dumps use for the two sides (`user`, `chatgpt`, `model`, …) and refuses unknown ones.
# ```

# %% tags=["nbval-check-output"]
def my_sharegpt_to_minimind(record):
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    messages = [{"role": roles[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]
    if record.get("system"):
        messages.insert(0, {"role": "system", "content": record["system"]})
    rest = {key: value for key, value in record.items() if key not in ("conversations", "system")}
    return {**rest, "conversations": messages}


check_sharegpt_to_minimind(my_sharegpt_to_minimind)

# %% [markdown]
# ```{exercise} Near duplicates in short conversations
# :label: ex-10-short
# Run `NearDeduplicator` with thresholds 0.6, 0.7, 0.8 and 0.9 (and shingle sizes 3 and 5) over
# the rows of `dirty_sft.jsonl`. For each setting count the near copies caught and the clean rows
# dropped. Why does the threshold matter so much more for short texts than for long ones?
# ```
#
# ```{solution} ex-10-short
# :class: dropdown
# Loop over the settings, build `F.NearDeduplicator(threshold, shingle_size=k)` and call `check` on
# `F.Sample(row, line)` for every parsed row, counting by the row's `dirt` label. Lower thresholds
# and shorter shingles catch more near copies and drop more clean rows. A text of $m$ characters has
# about $m$ shingles and one changed character changes $k$ of them, so its copy has
# $J \approx (m - k)/(m + k)$: 0.94 at $m = 150$ but 0.71 at $m = 30$ for $k = 5$. Short templated
# exchanges that differ in one word are as "near" as a long text with a typo — which is why chat
# data is often deduplicated on the prompt alone, or only exactly.
# ```
#
# ## Summary
#
# - Each kind of junk has a measure that exposes it — script share, symbol share, markup share,
#   repeated-line and repeated-$n$-gram share, length — and a threshold is chosen by looking at the
#   measure on clean and dirty rows, and at what it drops.
# - Exact duplicates are found by hashing normalized text; near duplicates by MinHash, whose
#   signatures agree at a rate equal to the Jaccard similarity, and LSH banding, whose S-curve
#   $1 - (1 - s^r)^b$ we measured on real edits.
# - `python -m minimind.data.prepare` streams any size of corpus through conversion, filters,
#   deduplication and statistics; every dropped record is counted against one filter and can be
#   kept with its reason, and kept + dropped = read is checked on every run.
# - On the dirty sample every injected kind of junk went to the filter made for it; near-duplicate
#   removal missed a few short copies and found real duplicates in the clean data.
# - Length statistics in tokens, counted as training renders each sample, tell how much a
#   `max_seq_len` truncates and how much of a padded batch is wasted.
#
# ## Further reading
#
# - MinHash and resemblance of documents: {cite}`broder1997resemblance`; locality-sensitive
#   hashing and banding, chapter 4 of {cite}`leskovec2020mmds`.
# - Quality filters for web text (repetition, symbols, length) at scale: {cite}`rae2021gopher`,
#   and a web-only corpus built with filtering and deduplication: {cite}`penedo2023refinedweb`.
# - Why deduplicating training data makes models better (less memorisation, cleaner evaluation):
#   {cite}`lee2022dedup`.
