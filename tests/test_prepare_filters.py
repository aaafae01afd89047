"""Quality filters and deduplication of `minimind.data.filters` on crafted cases."""
import random
import unicodedata

import numpy as np
import pytest

from minimind.data import filters as F
from minimind.data.filters import Sample

ZH = "北京是中国的首都，也是全国的政治和文化中心，拥有三千多年的建城史。故宫位于北京市中心。"
EN = "The quick brown fox jumps over the lazy dog, then rests under an old oak tree by the river."


def sample(text: str, line: int = 1) -> Sample:
    return Sample({"text": text}, line)


def conversation(*turns) -> dict:
    return {"conversations": [{"role": role, "content": content} for role, content in turns]}


# ---------------------------------------------------------------------------- measures


def test_script_share_counts_letters_only():
    assert F.cjk_share(ZH) == 1.0
    assert F.cjk_share(EN) == 0.0
    assert F.cjk_share("2024年5月") == 1.0  # digits are no script's letters
    assert F.cjk_share("!!! 123 ...") == 0.0  # no letters at all
    assert F.script_share("中文abc", ["han"]) == pytest.approx(2 / 5)
    assert F.script_share("中文abc", "cjk,latin") == 1.0
    assert F.script_share("Привет мир", ["cyrillic"]) == 1.0


def test_han_pattern_matches_exactly_the_unicode_cjk_ideographs():
    pattern = F._SCRIPT_RES["han"]
    for code in list(range(0x2E80, 0xFFFF)) + list(range(0x20000, 0x20400)):
        char = chr(code)
        if unicodedata.category(char) == "Cn":
            continue
        is_ideograph = unicodedata.name(char, "").startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"))
        assert bool(pattern.fullmatch(char)) == is_ideograph, f"U+{code:04X} {unicodedata.name(char, '?')}"


def test_parse_scripts_accepts_aliases_and_rejects_unknown_names():
    assert F.parse_scripts("cjk, en") == ("han", "latin")
    with pytest.raises(ValueError, match="unknown script 'klingon'"):
        F.parse_scripts(["klingon"])


def test_dominant_script_labels_mixed_and_letterless_text():
    assert F.dominant_script(ZH) == "han"
    assert F.dominant_script(EN) == "latin"
    assert F.dominant_script("北京 Beijing 上海 Shanghai") == "mixed"
    assert F.dominant_script("123 !!!") == "none"


def test_symbol_share_is_low_for_prose_and_high_for_junk():
    assert F.symbol_share(ZH) == 0.0
    assert F.symbol_share(EN + " (really!) \"yes\"; 3-4: ok?") == 0.0
    assert F.symbol_share("@@##$$%%&& ★★★ ▓▓▓") == 1.0
    assert F.symbol_share("12 + 30 = 42 > 40; <think>2*3</think>") == 0.0  # math and tags are not noise
    assert F.symbol_share("abc\ufffd\ufffd") == pytest.approx(2 / 5)  # replacement chars from broken decoding
    assert F.symbol_share("   ") == 0.0


def test_markup_share_counts_tags_entities_urls_but_not_reasoning_tags():
    assert F.markup_share(EN) == 0.0
    assert F.markup_share("<think>\nfirst\n</think>\n<answer>\n4\n</answer>") == 0.0
    html = '<div class="post"><p>hi&nbsp;there</p></div> see https://example.com/a?b=c'
    covered = len('<div class="post">') + len("<p>") + len("&nbsp;") + len("</p>") + len("</div>") + len("https://example.com/a?b=c")
    assert F.markup_share(html) == pytest.approx(covered / len(html))


def test_repeated_line_share_weighs_repeats_by_characters():
    assert F.repeated_line_share("one\ntwo\nthree") == 0.0
    assert F.repeated_line_share("ab\ncd\nab\nab") == pytest.approx(4 / 8)
    assert F.repeated_line_share("same line\n\n  same line  ") == pytest.approx(0.5)  # blank lines and padding ignored


def test_repeated_ngram_share_separates_natural_text_from_loops():
    assert F.repeated_ngram_share(EN) == 0.0
    assert F.repeated_ngram_share(ZH) < 0.2
    assert F.repeated_ngram_share("哈" * 30) == 1.0
    assert F.repeated_ngram_share("buy now " * 10) == 1.0
    # units: one Chinese character, or one run of other letters/digits
    assert F.text_units("Hello, 世界 x2!") == ["hello", "世", "界", "x2"]
    # a single repeated 3-gram: "a b c" twice in "a b c d a b c" → 6 of 7 units covered
    assert F.repeated_ngram_share("a b c d a b c", n=3) == pytest.approx(6 / 7)


# ---------------------------------------------------------------------------- filters: kept and dropped


@pytest.mark.parametrize("make_filter, kept, dropped", [
    (lambda: F.length_filter(5, 20), "twelve chars", "this text is much longer than twenty"),
    (lambda: F.length_filter(5, 20), "  fives  ", "  four  "),
    (lambda: F.script_filter(0.5, ["han"]), ZH, EN),
    (lambda: F.script_filter(0.5, ["han"]), "12 + 30 = 42.", "abc 12"),
    (lambda: F.script_filter(0.9, ["han", "latin"]), ZH + EN, ZH + " Это строка на другом языке, совсем не нужная здесь."),
    (lambda: F.symbol_filter(0.1), EN, EN + " ##@@$$%%^^&&**||~~<<>>{{}}"),
    (lambda: F.markup_filter(0.1), EN, "<div><span class='a'>" + EN + "</span></div><br/><br/><br/>&nbsp;&nbsp;http://spam.example/x"),
    (lambda: F.repeated_lines_filter(0.3), "line one\nline two\nline three", "subscribe now\n" * 4 + "real content"),
    (lambda: F.repeated_ngrams_filter(0.6), EN, "good good good good good good good good good"),
])
def test_each_text_filter_keeps_clean_and_drops_dirty_text(make_filter, kept, dropped):
    text_filter = make_filter()
    assert text_filter.check(sample(kept)) is None
    reason = text_filter.check(sample(dropped))
    assert isinstance(reason, str) and reason


def test_token_length_filter_counts_what_the_counter_returns():
    count_words = lambda record: len(record["text"].split())  # noqa: E731
    token_filter = F.token_length_filter(count_words, min_tokens=2, max_tokens=3)
    assert token_filter.check(sample("two words")) is None
    assert token_filter.check(sample("one")) == "1 tokens < 2"
    assert token_filter.check(sample("far too many words")) == "4 tokens > 3"
    with pytest.raises(ValueError):
        F.token_length_filter(count_words)


def test_conversation_format_filter_catches_empty_and_malformed_conversations():
    check = F.conversation_format_filter().check
    assert check(Sample(conversation(("user", "hi"), ("assistant", "hello")))) is None
    assert check(Sample({"text": "pretraining rows pass"})) is None
    assert check(Sample({"conversations": []})) == "empty conversation"
    assert check(Sample({"conversations": "hi"})) == "conversation is str, not a list"
    assert check(Sample({"conversations": ["hi"]})) == "message 0 is str, not an object"
    assert "role 'robot'" in check(Sample(conversation(("robot", "beep"))))
    assert check(Sample(conversation(("user", "hi"), ("assistant", "  ")))) == "message 1 (assistant) is empty"
    assert "content is int" in check(Sample({"conversations": [{"role": "user", "content": 3}]}))
    bad_rejected = {"chosen": conversation(("user", "q"), ("assistant", "a"))["conversations"], "rejected": []}
    assert check(Sample(bad_rejected)) == "empty conversation"


@pytest.mark.parametrize("turns, problem", [
    ((("user", "q"), ("assistant", "a")), None),
    ((("system", "s"), ("user", "q"), ("assistant", "a"), ("user", "q2"), ("assistant", "a2")), None),
    ((("assistant", "a"), ("user", "q")), "first turn is assistant, not user"),
    ((("user", "q"), ("user", "q again"), ("assistant", "a")), "user followed by user at position 1"),
    ((("user", "q"), ("assistant", "a"), ("assistant", "a2")), "assistant followed by assistant at position 2"),
    ((("user", "q"), ("assistant", "a"), ("user", "dangling")), "last turn is user, not assistant"),
    ((("user", "q"), ("system", "late"), ("assistant", "a")), "system message at position 1, not first"),
    ((("system", "only"),), "only a system message"),
])
def test_role_order_filter(turns, problem):
    assert F.role_order_filter().check(Sample(conversation(*turns))) == problem


def test_preference_pair_filter_needs_a_shared_prompt_and_different_replies():
    check = F.preference_pair_filter().check
    prompt = [{"role": "user", "content": "capital of France?"}]
    good = {"chosen": prompt + [{"role": "assistant", "content": "Paris"}],
            "rejected": prompt + [{"role": "assistant", "content": "Rome"}]}
    assert check(Sample(good)) is None
    same = {"chosen": good["chosen"], "rejected": good["chosen"]}
    assert check(Sample(same)) == "chosen and rejected replies are identical"
    other_prompt = {"chosen": good["chosen"], "rejected": [{"role": "user", "content": "x"}, good["rejected"][1]]}
    assert check(Sample(other_prompt)) == "chosen and rejected have different prompts"


def test_record_text_of_each_schema():
    assert F.record_text({"text": "t"}) == "t"
    assert F.record_text(conversation(("user", "q"), ("assistant", "a"))) == "q\na"
    pair = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}
    assert F.record_text(pair) == "q\ngood\nbad"
    with pytest.raises(F.RecordError, match="none of the fields"):
        F.record_text({"id": 3})


# ---------------------------------------------------------------------------- deduplication


def test_fingerprint_table_behaves_like_a_dict_through_growth():
    rng = random.Random(0)
    table, reference = F.FingerprintTable(capacity=8), {}
    for value in range(5000):
        key = F.fingerprint(str(rng.random()))
        if table.get(key) is None:
            table.add(key, value)
            reference[key] = value
    assert len(table) == len(reference) == 5000
    assert all(table.get(key) == value for key, value in reference.items())
    assert table.get(F.fingerprint("never added")) is None
    assert len(table) <= 0.75 * len(table.keys)  # at most three quarters full


def test_exact_dedup_drops_later_copies_and_names_the_first():
    dedup = F.ExactDeduplicator()
    assert dedup.check(sample("Hello  World", 3)) is None
    assert dedup.check(sample("hello world ", 7)) == "duplicate of line 3"  # case and spacing normalized
    assert dedup.check(sample("ＨＥＬＬＯ world", 9)) == "duplicate of line 3"  # full-width letters (NFKC)
    assert dedup.check(sample("hello world!", 11)) is None
    raw = F.ExactDeduplicator(normalize=False)
    assert raw.check(sample("a b")) is None and raw.check(sample("a  b")) is None


def _random_text(rng: random.Random, words: int) -> str:
    vocabulary = [f"w{index}" for index in range(3000)]
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def test_minhash_estimates_jaccard_as_well_as_datasketch():
    datasketch = pytest.importorskip("datasketch")
    rng = random.Random(1)
    hasher = F.MinHasher(num_perm=256, shingle_size=5, seed=3)
    ours, theirs = [], []
    for _ in range(12):
        base = _random_text(rng, 60).split()
        edited = list(base)
        for _ in range(rng.randint(1, 12)):  # replace some words: similarity from ~0.9 down to ~0.4
            edited[rng.randrange(len(edited))] = f"x{rng.randrange(10**6)}"
        first, second = " ".join(base), " ".join(edited)
        shingles = [set(F.shingle_hashes(F.normalize_for_dedup(t), 5).tolist()) for t in (first, second)]
        truth = F.jaccard(*shingles)
        ours.append(abs(hasher.estimate_jaccard(hasher.signature(first), hasher.signature(second)) - truth))
        reference = [datasketch.MinHash(num_perm=256, seed=3) for _ in range(2)]
        for minhash, shingle_set in zip(reference, shingles):
            minhash.update_batch([key.to_bytes(8, "little") for key in shingle_set])
        theirs.append(abs(reference[0].jaccard(reference[1]) - truth))
    # standard error of a 256-permutation estimate is at most 0.5/sqrt(256) ≈ 0.031
    assert max(ours) < 0.12 and max(theirs) < 0.12
    assert np.mean(ours) < 0.05 and np.mean(theirs) < 0.05


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128])
def test_lsh_parameters_match_datasketch(threshold, num_perm):
    datasketch = pytest.importorskip("datasketch")
    lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert F.lsh_parameters(threshold, num_perm) == (lsh.b, lsh.r)


def test_lsh_candidate_probability_is_an_s_curve_around_the_threshold():
    bands, rows = F.lsh_parameters(0.8, 128)
    probability = F.lsh_candidate_probability([0.0, 0.5, 0.8, 0.95, 1.0], bands, rows)
    assert probability[0] == 0.0 and probability[-1] == 1.0
    assert probability[1] < 0.01 and probability[3] > 0.99
    assert 0.2 < probability[2] < 0.8


def test_near_dedup_drops_edited_copies_and_keeps_distinct_texts():
    rng = random.Random(2)
    dedup = F.NearDeduplicator(threshold=0.8)
    originals = [_random_text(rng, 80) for _ in range(30)]
    for line, text in enumerate(originals, start=1):
        assert dedup.check(sample(text, line)) is None
    for line, text in enumerate(originals, start=1):
        words = text.split()
        words[rng.randrange(len(words))] = "edited"  # one word changed: Jaccard ≈ 0.95
        assert dedup.check(sample(" ".join(words).upper(), 100 + line)) == f"near duplicate of line {line}"
    for line, text in enumerate(originals, start=1):
        words = text.split()
        half = words[:40] + _random_text(rng, 40).split()  # half rewritten: Jaccard ≈ 0.3
        assert dedup.check(sample(" ".join(half), 200 + line)) is None


ZH_LONG = ("长城是古代中国在不同时期为抵御塞北游牧部落联盟侵袭而修筑的规模浩大的军事工程的统称。"
           "长城东西绵延上万华里，因此又称作万里长城。现存的长城遗迹主要为始建于十四世纪的明长城，"
           "西起嘉峪关，东至辽东虎山，全长八千八百五十一点八公里。")


def test_near_dedup_on_chinese_near_duplicates():
    dedup = F.NearDeduplicator(threshold=0.8)
    assert dedup.check(sample(ZH_LONG, 1)) is None
    assert dedup.check(sample(ZH_LONG.replace("十四", "十五"), 2)) == "near duplicate of line 1"
    assert dedup.check(sample(ZH, 3)) is None


def test_repetition_filters_judge_each_side_of_a_preference_pair_alone():
    prompt = [{"role": "user", "content": "Describe the lazy dog."}]
    pair = {"chosen": prompt + [{"role": "assistant", "content": EN}],
            "rejected": prompt + [{"role": "assistant", "content": EN.replace("old oak", "young pine")}]}
    assert F.repeated_ngram_share(F.record_text(pair)) > 0.6  # both replies together repeat each other
    assert F.repeated_ngrams_filter(0.6).check(Sample(pair)) is None
    looping = {"chosen": pair["chosen"], "rejected": prompt + [{"role": "assistant", "content": "lazy dog " * 20}]}
    assert F.repeated_ngrams_filter(0.6).check(Sample(looping)) == "repeated 5-gram share 0.95 > 0.6"  # 40 of 42 units


def test_normalize_for_dedup_equals_full_nfkc():
    texts = [ZH + "（全角）ＡＢＣ　１２３！", "ﬁne ①②", EN.upper() + "\u3000\t x", "Ｃａｆé"]
    for text in texts:
        expected = " ".join(unicodedata.normalize("NFKC", text).lower().split())
        assert F.normalize_for_dedup(text) == expected


def test_chapter_self_checks_accept_the_reference_and_reject_mistakes(capsys):
    from minimind.checks import data as checks

    checks.check_cjk_share(F.cjk_share)
    checks.check_lsh_probability(F.lsh_candidate_probability)
    assert "✓ CJK share" in capsys.readouterr().out
    share_of_all_characters = lambda text: sum("\u4e00" <= c <= "\u9fff" for c in text) / max(len(text), 1)  # noqa: E731
    with pytest.raises(AssertionError, match="digits are not letters"):
        checks.check_cjk_share(share_of_all_characters)
    with pytest.raises(AssertionError, match="1 - s\\^r"):
        checks.check_lsh_probability(lambda s, b, r: s ** (r * b))


def test_script_patterns_only_match_letters():
    for name, pattern in F._SCRIPT_RES.items():
        for code in range(0x30000):  # every range in SCRIPTS lies below U+30000
            char = chr(code)
            if pattern.match(char):
                assert char.isalpha(), f"{name} matches U+{code:04X}, which is not a letter"
