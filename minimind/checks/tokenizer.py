"""Self-checks for chapter 1 (tokenization): counting pairs, merging a pair, and the assistant
loss mask computed the way upstream MiniMind computes it."""
from collections import Counter

_MERGE_CASES = [  # (ids, pair, new_id, expected)
    ([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]),
    ([1, 2, 3], (2, 3), 9, [1, 9]),
    ([5, 5, 5], (5, 5), 9, [9, 5]),
    ([5, 5, 5, 5], (5, 5), 9, [9, 9]),
    ([1, 2], (2, 1), 9, [1, 2]),
    ([2, 1, 2, 1], (1, 2), 9, [2, 9, 1]),
    ([7], (7, 7), 9, [7]),
    ([], (1, 2), 9, []),
]

_PAIR_CASES = [  # (words {tuple of ids: frequency}, expected counts)
    ({(1, 2, 3): 1}, {(1, 2): 1, (2, 3): 1}),
    ({(1, 2, 3): 4, (2, 3): 2}, {(1, 2): 4, (2, 3): 6}),
    ({(5, 5, 5): 3}, {(5, 5): 6}),
    ({(7,): 10, (): 1}, {}),
]


def check_merge(fn) -> None:
    """fn(ids, pair, new_id) -> list: every occurrence of `pair`, scanned left to right, replaced by new_id."""
    for ids, pair, new_id, expected in _MERGE_CASES:
        original = list(ids)
        got = fn(list(ids), pair, new_id)
        assert got is not None, "merge must return the new list of ids"
        got = list(got)
        if len(ids) == 3 and ids == [5, 5, 5]:
            assert got != [9, 9], "(5, 5) in [5, 5, 5] overlaps itself: merge left to right, so the answer is [9, 5]"
        if got == original and expected != original:
            raise AssertionError(f"merge({original}, {pair}, {new_id}) replaced nothing: compare the tuple "
                                 "(ids[i], ids[i + 1]) with `pair` (a list slice never equals a tuple)")
        assert got == expected, f"merge({original}, {pair}, {new_id}) should be {expected}, got {got}"
    print(f"✓ merge is right on {len(_MERGE_CASES)} cases (overlaps, ends, no match, empty input)")


def check_pair_counts(fn) -> None:
    """fn(words) -> mapping: for words {tuple of ids: frequency}, how often each adjacent pair occurs."""
    for words, expected in _PAIR_CASES:
        counts = fn(dict(words))
        assert counts is not None, "return the counts: a dict or Counter {pair: count}"
        got = dict(Counter(counts))
        got = {pair: count for pair, count in got.items() if count}
        if words == {(1, 2, 3): 4, (2, 3): 2} and got.get((2, 3)) == 2:
            raise AssertionError("each word occurs `frequency` times: add the frequency, not 1")
        if expected and not got:
            raise AssertionError(f"pair counts of {words} came back empty: count every adjacent pair "
                                 "zip(word, word[1:]) of every word")
        assert got == expected, f"pair counts of {words} should be {expected}, got {got}"
    print(f"✓ pair counts are right on {len(_PAIR_CASES)} cases (frequencies, overlapping pairs, one-token words)")


def _in_assistant_header(tokenizer, ids, expected, position) -> bool:
    """Whether token `position` (mask 0) belongs to the `<|im_start|>assistant\\n` before a reply."""
    reply = next((i for i in range(position, len(ids)) if expected[i]), None)
    return reply is not None and "<|im_start|>assistant\n".endswith(tokenizer.decode(ids[position:reply]))


def check_assistant_mask(fn, tokenizer) -> None:
    """fn(tokenizer, messages) -> list of 0/1 over the ids of the rendered conversation, 1 on assistant
    reply tokens, their <|im_end|> and the newline after it. Compared with render_conversation."""
    conversations = [
        [{"role": "user", "content": "How old is Pelum?"}, {"role": "assistant", "content": "23"}],
        [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Pelum住在哪里？"},
         {"role": "assistant", "content": "Varo"}, {"role": "user", "content": "And the job?"},
         {"role": "assistant", "content": "tailor"}],
        [{"role": "user", "content": "What is 17 plus 25?"},
         {"role": "assistant", "content": "<think>\n7+5=12, write 2 carry 1. 1+2+1=4, write 4. So 42.\n</think>\n<answer>42</answer>"}],
        [{"role": "user", "content": "Hi"}],
    ]
    for messages in conversations:
        ids, expected = tokenizer.render_conversation(messages)
        got = fn(tokenizer, messages)
        assert got is not None, "return the mask as a list of 0/1"
        got = [int(x) for x in got]
        assert len(got) == len(ids), f"the mask needs one entry per token id: {len(ids)} ids, {len(got)} entries"
        if got != expected:
            first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
            token = tokenizer.decode([ids[first]])
            if expected[first] == 1:
                hint = "supervise the reply, its <|im_end|> and the \\n after it"
            elif _in_assistant_header(tokenizer, ids, expected, first):
                hint = "the <|im_start|>assistant\\n header is not a target"
            else:
                hint = "only assistant replies are targets: system and user turns get 0"
            raise AssertionError(f"first wrong entry at position {first} (token {token!r}): expected {expected[first]}, "
                                 f"got {got[first]} — {hint}")
    print(f"✓ assistant mask equals render_conversation's on {len(conversations)} conversations")
