"""Chapters 1, 4 and 5's self-checks accept the book's solutions and reject the typical mistakes with a hint."""
import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from minimind.checks.tokenizer import check_assistant_mask, check_merge, check_pair_counts
from minimind.checks.training import check_lr_schedule, check_next_token_loss, check_packing, check_sft_labels
from minimind.losses import masked_cross_entropy
from minimind.train import TrainConfig, learning_rate_at
from inference_helpers import tiny_tokenizer


# --- chapter 1: merge, pair counts, the assistant mask --------------------------------------------

def merge(ids, pair, new_id):  # chapter 1, section 2
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def count_pairs(words):  # chapter 1, section 2
    counts = Counter()
    for word, frequency in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += frequency
    return counts


def test_merge_check_accepts_the_chapter_merge(capsys):
    check_merge(merge)
    assert "✓" in capsys.readouterr().out


def test_merge_check_rejects_typical_mistakes():
    def overlapping(ids, pair, new_id):  # a new_id wherever the pair starts, even inside a previous match
        starts = {i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == pair}
        covered = starts | {i + 1 for i in starts}
        return [new_id if i in starts else t for i, t in enumerate(ids) if i in starts or i not in covered]

    def slice_vs_tuple(ids, pair, new_id):  # ids[i:i+2] is a list: never equal to the tuple `pair`
        out, i = [], 0
        while i < len(ids):
            if ids[i:i + 2] == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    def in_place(ids, pair, new_id):
        ids[:] = merge(ids, pair, new_id)

    with pytest.raises(AssertionError, match="overlaps itself"):
        check_merge(overlapping)
    with pytest.raises(AssertionError, match="replaced nothing"):
        check_merge(slice_vs_tuple)
    with pytest.raises(AssertionError, match="replaced nothing"):
        check_merge(lambda ids, pair, new_id: ids)
    with pytest.raises(AssertionError, match="must return"):
        check_merge(in_place)


def test_pair_counts_check_accepts_the_chapter_count(capsys):
    check_pair_counts(count_pairs)
    check_pair_counts(lambda words: dict(count_pairs(words)))
    assert "✓" in capsys.readouterr().out


def test_pair_counts_check_rejects_typical_mistakes():
    def plus_one(words):
        return Counter(pair for word in words for pair in zip(word, word[1:]))

    def unique_pairs(words):  # counts (5, 5) once per word instead of once per occurrence
        counts = Counter()
        for word, frequency in words.items():
            for pair in set(zip(word, word[1:])):
                counts[pair] += frequency
        return counts

    def no_return(words):
        count_pairs(words)

    with pytest.raises(AssertionError, match="add the frequency, not 1"):
        check_pair_counts(plus_one)
    with pytest.raises(AssertionError, match="came back empty"):
        check_pair_counts(lambda words: Counter())
    with pytest.raises(AssertionError, match="return the counts"):
        check_pair_counts(no_return)
    with pytest.raises(AssertionError, match=r"\{\(5, 5\): 6\}, got \{\(5, 5\): 3\}"):
        check_pair_counts(unique_pairs)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def upstream_mask(tokenizer, messages):  # chapter 1's exercise solution: search the ids for the markers
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


def test_assistant_mask_check_accepts_the_package_and_the_upstream_mask(tokenizer, capsys):
    check_assistant_mask(lambda tok, messages: tok.render_conversation(messages)[1], tokenizer)
    check_assistant_mask(upstream_mask, tokenizer)
    assert capsys.readouterr().out.count("✓") == 2


def test_assistant_mask_check_rejects_typical_mistakes(tokenizer):
    def with_header(tok, messages):  # also marks <|im_start|>assistant\n
        ids = tok.encode(tok.apply_chat_template(messages))
        header = tok.encode("<|im_start|>assistant\n")
        mask = upstream_mask(tok, messages)
        for i in range(len(ids)):
            if ids[i:i + len(header)] == header:
                mask[i:i + len(header)] = [1] * len(header)
        return mask

    def without_end(tok, messages):  # stops before <|im_end|>\n
        ids = tok.encode(tok.apply_chat_template(messages))
        end = tok.encode("<|im_end|>\n")
        mask = upstream_mask(tok, messages)
        for i in range(len(ids)):
            if ids[i:i + len(end)] == end and mask[i]:
                mask[i:i + len(end)] = [0] * len(end)
        return mask

    def everything(tok, messages):
        return [1] * len(tok.encode(tok.apply_chat_template(messages)))

    def per_character(tok, messages):
        return [0] * len(tok.apply_chat_template(messages))

    with pytest.raises(AssertionError, match="header is not a target"):
        check_assistant_mask(with_header, tokenizer)
    with pytest.raises(AssertionError, match="its <\\|im_end\\|> and the \\\\n after it"):
        check_assistant_mask(without_end, tokenizer)
    with pytest.raises(AssertionError, match="position 0 .*system and user turns get 0"):
        check_assistant_mask(everything, tokenizer)
    with pytest.raises(AssertionError, match="one entry per token id"):
        check_assistant_mask(per_character, tokenizer)


# --- chapter 4: next-token loss, learning-rate schedule, packing ----------------------------------

def cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr_ratio):  # chapter 4, section 3
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    floor = peak_lr * min_lr_ratio
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps - 1))
    return floor + (peak_lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def pack_documents(documents, seq_len, bos, eos):  # chapter 4, section 1
    stream = [token for doc in documents for token in (bos, *doc, eos)]
    return [stream[i * seq_len:(i + 1) * seq_len] for i in range(len(stream) // seq_len)]


def test_next_token_loss_check_accepts_the_package_and_chapter_loss(capsys):
    check_next_token_loss(masked_cross_entropy)
    check_next_token_loss(lambda logits, labels: F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100))
    assert capsys.readouterr().out.count("✓") == 2


def test_next_token_loss_check_rejects_typical_mistakes():
    V = 11

    def unshifted(logits, labels):
        return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)

    def backwards(logits, labels):
        return F.cross_entropy(logits[:, 1:].reshape(-1, V), labels[:, :-1].reshape(-1), ignore_index=-100)

    def mean_over_all(logits, labels):
        losses = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="none")
        return losses.mean()

    def per_sequence(logits, labels):
        losses = [F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=-100) for b in range(logits.size(0))]
        return torch.stack(losses).mean()

    def per_position(logits, labels):
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), reduction="none")

    with pytest.raises(AssertionError, match="predicts token t\\+1"):
        check_next_token_loss(unshifted)
    with pytest.raises(AssertionError, match="shifted the wrong way"):
        check_next_token_loss(backwards)
    with pytest.raises(AssertionError, match="not by every position"):
        check_next_token_loss(mean_over_all)
    with pytest.raises(AssertionError, match="not per sequence"):
        check_next_token_loss(per_sequence)
    with pytest.raises(AssertionError, match="scalar"):
        check_next_token_loss(per_position)


def test_lr_schedule_check_accepts_the_engine_and_chapter_schedule(capsys):
    check_lr_schedule(cosine_lr)
    check_lr_schedule(lambda step, total, peak, warmup, ratio: learning_rate_at(
        step, total, TrainConfig(lr=peak, warmup_steps=warmup, min_lr_ratio=ratio)))
    assert capsys.readouterr().out.count("✓") == 2


def test_lr_schedule_check_rejects_typical_mistakes():
    def warmup_from_zero(step, total, peak, warmup, ratio):
        return peak * step / warmup if step < warmup else cosine_lr(step, total, peak, warmup, ratio)

    def to_zero(step, total, peak, warmup, ratio):
        return cosine_lr(step, total, peak, warmup, 0.0)

    def upstream(step, total, peak, warmup, ratio):
        return learning_rate_at(step, total, TrainConfig(lr=peak, schedule="upstream"))

    with pytest.raises(AssertionError, match="stays at the peak"):
        check_lr_schedule(lambda step, total, peak, warmup, ratio: peak)
    with pytest.raises(AssertionError, match="not at 0"):
        check_lr_schedule(warmup_from_zero)
    with pytest.raises(AssertionError, match="ends at the floor"):
        check_lr_schedule(to_zero)
    with pytest.raises(AssertionError, match="step 0 of 100"):
        check_lr_schedule(upstream)


def test_packing_check_accepts_the_chapter_packing(capsys):
    check_packing(pack_documents)
    check_packing(lambda documents, seq_len, bos, eos: iter(pack_documents(documents, seq_len, bos, eos)))
    assert capsys.readouterr().out.count("✓") == 2


def test_packing_check_rejects_typical_mistakes():
    def no_eos(documents, seq_len, bos, eos):
        stream = [t for doc in documents for t in (bos, *doc)]
        return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]

    def no_bos(documents, seq_len, bos, eos):
        stream = [t for doc in documents for t in (*doc, eos)]
        return [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]

    def keeps_tail(documents, seq_len, bos, eos):
        stream = [t for doc in documents for t in (bos, *doc, eos)]
        return [stream[i:i + seq_len] for i in range(0, len(stream), seq_len)]

    def per_document(documents, seq_len, bos, eos):  # never lets a chunk cross a document boundary
        return [chunk for doc in documents for chunk in pack_documents([doc], seq_len, bos, eos)]

    with pytest.raises(AssertionError, match="eos \\(2\\) is missing"):
        check_packing(no_eos)
    with pytest.raises(AssertionError, match="bos \\(1\\) is missing"):
        check_packing(no_bos)
    with pytest.raises(AssertionError, match="partial chunk"):
        check_packing(keeps_tail)
    with pytest.raises(AssertionError, match="expected .*, got"):
        check_packing(per_document)


# --- chapter 5: SFT labels -------------------------------------------------------------------------

def sft_labels(ids, mask, max_len):  # chapter 5, section 2
    ids, mask = ids[:max_len], mask[:max_len]
    return ids, [token if supervised else -100 for token, supervised in zip(ids, mask)]


def test_sft_labels_check_accepts_the_chapter_labels(capsys):
    check_sft_labels(sft_labels)
    check_sft_labels(lambda ids, mask, n: tuple(map(torch.tensor, sft_labels(ids, mask, n))))
    assert capsys.readouterr().out.count("✓") == 2


def test_sft_labels_check_rejects_typical_mistakes():
    def not_masked(ids, mask, max_len):
        return ids[:max_len], ids[:max_len]

    def inverted(ids, mask, max_len):
        return ids[:max_len], [-100 if m else t for t, m in zip(ids, mask)][:max_len]

    def zero_padded(ids, mask, max_len):
        return ids[:max_len], [t if m else 0 for t, m in zip(ids, mask)][:max_len]

    def shifted(ids, mask, max_len):
        labels = sft_labels(ids, mask, max_len)[1]
        return ids[:max_len], labels[1:] + [-100]

    def labels_not_cut(ids, mask, max_len):
        return ids[:max_len], [t if m else -100 for t, m in zip(ids, mask)]

    with pytest.raises(AssertionError, match="labels equal input_ids"):
        check_sft_labels(not_masked)
    with pytest.raises(AssertionError, match="keep ids where mask == 1"):
        check_sft_labels(inverted)
    with pytest.raises(AssertionError, match="not 0"):
        check_sft_labels(zero_padded)
    with pytest.raises(AssertionError, match="do not shift the labels"):
        check_sft_labels(shifted)
    with pytest.raises(AssertionError, match="same max_len"):
        check_sft_labels(labels_not_cut)
