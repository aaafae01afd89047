"""Self-checks for the data-preparation chapter: script share, LSH banding, a ShareGPT converter."""
import copy
import math


def check_cjk_share(fn) -> None:
    """fn(text) -> share of the letters of `text` that are Chinese (Han) characters, 0.0 when
    the text has no letters."""
    cases = [
        ("北京是首都", 1.0, "pure Chinese"),
        ("Beijing is the capital", 0.0, "pure English"),
        ("北京Beijing", 2 / 9, "2 Han characters among 9 letters"),
        ("2024年5月1日", 1.0, "digits are not letters: only 年, 月, 日 count"),
        ("北京，上海！Hi.", 4 / 6, "punctuation is not a letter"),
        ("", 0.0, "empty text: no letters, share 0.0"),
        ("123 !!!", 0.0, "no letters at all: share 0.0, not a division by zero"),
        ("Привет 世界", 2 / 8, "Cyrillic letters are letters too"),
        ("\U00020000\U0002a6d6ab", 0.5, "CJK extension B characters (outside the BMP) are Han too"),
    ]
    for text, want, hint in cases:
        got = fn(text)
        assert isinstance(got, float) or isinstance(got, int), f"{text!r}: return a number, got {type(got).__name__}"
        assert math.isclose(got, want, abs_tol=1e-9), f"{text!r}: expected {want:.4f}, got {got:.4f} ({hint})"
    print("✓ CJK share: Han letters / all letters, digits and punctuation ignored")


def check_lsh_probability(fn) -> None:
    """fn(similarity, bands, rows) -> probability that two documents with that Jaccard similarity
    share at least one of `bands` bands of `rows` MinHash values each."""
    for similarity, bands, rows in ((0.0, 9, 13), (1.0, 9, 13), (0.5, 20, 5), (0.8, 9, 13), (0.9, 1, 1), (0.3, 50, 2)):
        want = 1.0 - (1.0 - similarity ** rows) ** bands
        got = float(fn(similarity, bands, rows))
        assert math.isclose(got, want, abs_tol=1e-9), (
            f"s={similarity}, b={bands}, r={rows}: expected {want:.6f}, got {got:.6f}. One band matches with "
            "probability s^r (all r values equal); it fails with 1 - s^r; all b bands fail with (1 - s^r)^b")
    print("✓ LSH candidate probability: 1 - (1 - s^r)^b")


def check_sharegpt_to_minimind(fn) -> None:
    """fn(record) -> the record in MiniMind's schema: ShareGPT turns {"from", "value"} become
    {"role", "content"} (human → user, gpt → assistant, system → system), a top-level "system"
    string becomes a leading system message, every other field of the record is kept."""
    cases = [
        ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
         {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
         "human → user, gpt → assistant"),
        ({"id": 3, "system": "Be brief.", "conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
         {"id": 3, "conversations": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                                     {"role": "assistant", "content": "4"}]},
         "a top-level 'system' becomes the first message, and other fields (id) stay"),
        ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
         {"conversations": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a"}]},
         "an inline system turn stays a system message"),
    ]
    for record, want, hint in cases:
        original = copy.deepcopy(record)
        got = fn(record)
        assert record == original, "do not modify the input record; build a new one"
        assert got == want, f"{hint}:\n  expected {want}\n  got      {got}"
    print("✓ ShareGPT → MiniMind: roles renamed, system prompt first, other fields kept")
