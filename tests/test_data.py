"""The jsonl reader (schemas, file:line errors, skipping with a count, streaming) and the synthetic
world (determinism, the committed files, schemas, splits that keep evaluation honest)."""
import json
import re
import warnings

import pytest

from minimind.data import synthetic
from minimind.data.jsonl import DataError, JsonlReport, read_jsonl
from minimind.data.synthetic import (
    ATTRIBUTES, DATASETS, MINIMIND_IDENTITY, SPLITS, build_world, column_steps, dataset_path, dataset_rows,
    write_datasets,
)
from minimind.scoring import is_correct, is_minimind_identity, parse_reasoning, reply_style
from minimind.paths import REPO_ROOT

# Lines in the formats of upstream MiniMind's released files, extra keys included.
UPSTREAM_LINES = {
    "pretrain": ['{"text": "<|im_start|>鉴别一组中文文章的风格和特点<|im_end|> <|im_start|>好的<|im_end|>"}'],
    "sft": ['{"conversations": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}',
            '{"conversations": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, '
            '{"role": "assistant", "content": "<think>\\n想\\n</think>\\n<answer>\\n答\\n</answer>", '
            '"reasoning_content": ""}], "id": 7}',
            # tool use as upstream's SFT data writes it: signatures and calls as JSON strings
            '{"conversations": [{"role": "system", "content": "", "tools": "[{\\"type\\": \\"function\\", '
            '\\"function\\": {\\"name\\": \\"calculator\\"}}]"}, {"role": "user", "content": "6*7?"}, '
            '{"role": "assistant", "content": null, "tool_calls": "[{\\"name\\": \\"calculator\\", '
            '\\"arguments\\": {\\"expression\\": \\"6*7\\"}}]"}, {"role": "tool", "content": "42"}, '
            '{"role": "assistant", "content": "42"}]}'],
    "dpo": ['{"chosen": [{"content": "q", "role": "user"}, {"content": "good", "role": "assistant"}], '
            '"rejected": [{"content": "q", "role": "user"}, {"content": "bad", "role": "assistant"}]}'],
}

BAD_LINES = [  # (schema, line, what the error says)
    ("pretrain", '{"text": "ok"', "invalid JSON"),
    ("pretrain", '["text"]', "expected a JSON object"),
    ("pretrain", '{"txt": "x"}', "missing field 'text'"),
    ("pretrain", '{"text": 5}', "'text' must be a string"),
    ("pretrain", '{"text": ""}', "'text' is empty"),
    ("sft", '{"conversations": []}', "empty conversation"),
    ("sft", '{"conversation": [{"role": "user", "content": "x"}]}', "missing field 'conversations'"),
    ("sft", '{"conversations": {"role": "user"}}', "must be a list"),
    ("sft", '{"conversations": [{"role": "bot", "content": "x"}]}', "unknown role 'bot'"),
    ("sft", '{"conversations": [{"role": "user"}]}', "missing field 'content'"),
    ("sft", '{"conversations": [{"role": "user", "content": null}]}', "content must be a string"),
    ("sft", '{"conversations": ["hi"]}', "must be an object"),
    ("sft", '{"conversations": [{"role": "assistant", "content": null, "tool_calls": [{"arguments": {}}]}]}',
     "conversations[0].tool_calls[0].name must be a non-empty string"),
    ("sft", '{"conversations": [{"role": "system", "content": "", "tools": "[oops"}]}', "tools is a string but not valid JSON"),
    ("sft", '{"conversations": [{"role": "tool", "content": null}]}', "content must be a string"),
    ("dpo", '{"chosen": [{"role": "user", "content": "x"}]}', "missing field 'rejected'"),
    ("dpo", '{"chosen": [{"role": "user", "content": "x"}], "rejected": []}', "'rejected' is an empty conversation"),
]


def write_lines(path, lines, encoding="utf-8"):
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode(encoding)) + b"\n" for line in lines))
    return path


# -- the jsonl reader ------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", sorted(UPSTREAM_LINES))
def test_reader_accepts_upstream_formats_unchanged(tmp_path, schema):
    path = write_lines(tmp_path / "upstream.jsonl", UPSTREAM_LINES[schema])
    rows = list(read_jsonl(path, schema=schema))
    assert rows == [json.loads(line) for line in UPSTREAM_LINES[schema]]


@pytest.mark.parametrize("schema, line, reason", BAD_LINES)
def test_each_kind_of_bad_line_raises_with_file_and_line(tmp_path, schema, line, reason):
    good = UPSTREAM_LINES[schema][0]
    path = write_lines(tmp_path / "bad.jsonl", [good, "", good, line, good])
    with pytest.raises(DataError, match=re.escape(f"{path}:4: ") + ".*" + re.escape(reason)):
        list(read_jsonl(path, schema=schema))


def test_non_utf8_line_raises_with_file_and_line(tmp_path):
    path = write_lines(tmp_path / "latin1.jsonl", ['{"text": "ok"}', '{"text": "café"}'.encode("latin-1")])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not valid UTF-8")):
        list(read_jsonl(path, schema="pretrain"))


def test_skip_bad_counts_reports_and_warns_once(tmp_path):
    lines = ['{"text": "a"}', '{"text": ', '{"text": "b"}', b'{"text": "\xff"}', '{"txt": 1}', '{"text": "c"}']
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    report = JsonlReport()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = list(read_jsonl(path, schema="pretrain", skip_bad=True, report=report))
    assert [row["text"] for row in rows] == ["a", "b", "c"]
    assert (report.rows, report.skipped) == (3, 3)
    assert [message.split(": ")[0] for message in report.first_errors] == [f"{path}:2", f"{path}:4", f"{path}:5"]
    assert len(caught) == 1 and f"skipped 3 bad line(s) of 6" in str(caught[0].message)


def test_clean_file_read_with_skip_bad_does_not_warn(tmp_path):
    path = write_lines(tmp_path / "clean.jsonl", ['{"text": "a"}'])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(read_jsonl(path, schema="pretrain", skip_bad=True))) == 1


def test_reader_streams_and_tolerates_blank_lines_and_a_byte_order_mark(tmp_path):
    path = write_lines(tmp_path / "stream.jsonl", [b'\xef\xbb\xbf{"text": "first"}', "", "  ", '{"text": "second"}', "not json"])
    rows = read_jsonl(path, schema="pretrain")
    assert next(rows)["text"] == "first"  # a later bad line is not read yet: nothing is loaded up front
    assert next(rows)["text"] == "second"
    with pytest.raises(DataError, match=":5: invalid JSON"):
        next(rows)


def test_unknown_schema_is_rejected():
    with pytest.raises(ValueError, match="unknown schema"):
        read_jsonl("whatever.jsonl", schema="chat")


# -- the synthetic world ---------------------------------------------------------------------------
def test_generation_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path):
    first, second, other = (write_datasets(tmp_path / d, seed=s) for d, s in (("a", 0), ("b", 0), ("c", 1)))
    for key in first:
        assert first[key].read_bytes() == second[key].read_bytes(), key
    assert first["pretrain_train"].read_bytes() != other["pretrain_train"].read_bytes()
    assert (tmp_path / "a" / "README.md").read_bytes() == (tmp_path / "b" / "README.md").read_bytes()


def test_committed_data_equals_a_fresh_generation(tmp_path):
    committed = (REPO_ROOT / "data") if REPO_ROOT is not None else None
    if committed is None or not (committed / "README.md").exists():
        pytest.skip("no committed data/ folder (not a repository checkout)")
    fresh = write_datasets(tmp_path, seed=0)
    for key, path in fresh.items():
        assert (committed / path.name).read_bytes() == path.read_bytes(), f"data/{path.name} is stale: run `make data`"
    assert (committed / "README.md").read_bytes() == (tmp_path / "README.md").read_bytes()


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("name", DATASETS)
def test_every_dataset_file_reads_back_under_its_schema(name, split):
    rows = list(read_jsonl(dataset_path(name, split), schema=synthetic.SCHEMA_OF[name]))
    assert rows == dataset_rows(name, split) and len(rows) > 0


def test_dataset_path_generates_the_files_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMIND_DATA", str(tmp_path / "generated"))
    path = dataset_path("sft", "val")
    assert path == tmp_path / "generated" / "sft_val.jsonl" and path.exists()
    assert len(list((tmp_path / "generated").glob("*.jsonl"))) == len(DATASETS) * len(SPLITS)
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_path("chat")


def test_sizes_fit_the_cpu_budget():
    pretrain_characters = sum(len(row["text"]) for row in dataset_rows("pretrain"))
    assert 1_000_000 <= pretrain_characters <= 2_500_000
    total_bytes = sum(dataset_path(name, split).stat().st_size for name in DATASETS for split in SPLITS)
    # the tool conversations carry their signatures in every row, as upstream's do (1.8 MB); the tea
    # house's held-out questions are the val split of both of its datasets (95 kB each)
    assert total_bytes < 8_200_000


def test_world_is_deterministic_and_splits_people_in_two_halves():
    world = build_world(0)
    assert len(world.people) == 120 and len({p.name for p in world.people}) == 120
    assert not {p.name for p in world.sft_people} & {p.name for p in world.heldout_people}
    assert len(world.sft_people) == len(world.heldout_people) == 60
    assert [p for p in synthetic.World(0).people] == list(world.people)
    assert synthetic.World(1).people != world.people


def test_held_out_people_appear_only_in_biographies():
    world = build_world(0)
    heldout = {p.name for p in world.heldout_people}
    pretrain = [row["text"] for row in dataset_rows("pretrain")]
    questions = [text for text in pretrain if text.startswith(("Q:", "问："))]
    biographies = [text for text in pretrain if not text.startswith(("Q:", "问："))]
    mentioned = lambda texts: {w for text in texts for w in re.findall(r"[A-Z][a-z]+", text)}
    assert heldout <= mentioned(biographies)
    assert not heldout & mentioned(questions)
    sft_text = json.dumps(dataset_rows("sft", "train"), ensure_ascii=False)
    assert not heldout & set(re.findall(r"[A-Z][a-z]+", sft_text))


def test_sft_answers_carry_only_the_value():
    world = build_world(0)
    values = {(p.name, a, lang): p.value(a, lang) for p in world.people for a in ATTRIBUTES for lang in ("en", "zh")}
    questions = {item.prompt: item for item in world.questions("all", "train") + world.questions("all", "reworded")}
    checked = 0
    for split in SPLITS:
        for row in dataset_rows("sft", split):
            messages = [m for m in row["conversations"] if m["role"] != "system"]
            for question, answer in zip(messages[::2], messages[1::2]):
                item = questions.get(question["content"])
                if item is not None:
                    # an English word after a space, as in every pretraining sentence (the same token)
                    value = values[(item.subject, item.attribute, item.lang)]
                    spaced = item.lang == "en" and not value.isdigit()
                    assert answer["content"] == (f" {value}" if spaced else value)
                    checked += 1
    assert checked > 3000


def test_evaluation_prompts_are_never_trained_on():
    world = build_world(0)
    train_prompts = lambda name: {m["content"] for row in dataset_rows(name, "train")
                                  for m in row["conversations"] if m["role"] == "user"}
    sft = train_prompts("sft")
    assert not sft & {item.prompt for item in world.questions("sft", "reworded") + world.questions("heldout", "train")}
    assert {item.prompt for item in world.questions("sft", "train")} <= sft
    assert not train_prompts("lora_identity") & {row["conversations"][0]["content"] for row in dataset_rows("lora_identity", "val")}
    tea_held_out = {row["conversations"][0]["content"] for row in dataset_rows("lora_domain", "val")}
    assert not (train_prompts("lora_domain") | train_prompts("lora_domain_phrasings")) & tea_held_out
    assert tea_held_out == {row["conversations"][0]["content"] for row in dataset_rows("lora_domain_phrasings", "val")}
    problems = {split: {(p.kind, p.a, p.b) for p in world.problems(split)} for split in ("train", "val", "reworded")}
    assert not problems["train"] & problems["val"] and not problems["train"] & problems["reworded"]
    assert not problems["val"] & problems["reworded"]
    reworded_prompts = {p.prompt for p in world.problems("reworded")}
    templates = [t for by_lang in synthetic.PROBLEM_TEMPLATES.values() for ts in by_lang.values() for t in ts]
    assert not any(re.fullmatch(re.escape(t).replace(r"\{name\}", ".+").replace(r"\{a\}", r"\d+").replace(r"\{b\}", r"\d+"), prompt)
                   for t in templates for prompt in reworded_prompts)


def test_reasoning_training_prompts_are_reworded_but_never_in_a_held_out_phrasing():
    world = build_world(0)
    as_regex = lambda t: re.escape(t).replace(r"\{name\}", ".+").replace(r"\{a\}", r"\d+").replace(r"\{b\}", r"\d+")
    templates = lambda table: [as_regex(t) for by_lang in table.values() for ts in by_lang.values() for t in ts]
    held_out = templates(synthetic.REWORDED_PROBLEM_TEMPLATES)
    extra = templates(synthetic.REASON_EXTRA_TEMPLATES)
    for split in SPLITS:
        problems, reason = world.problems(split), dataset_rows("reason", split)
        rephrased = 0
        for problem, row in zip(problems, reason):
            prompt = row["conversations"][0]["content"]
            assert not any(re.fullmatch(t, prompt) for t in held_out), prompt
            assert str(problem.a) in prompt and str(problem.b) in prompt
            rephrased += prompt != problem.prompt
            if prompt != problem.prompt:
                assert any(re.fullmatch(t, prompt) for t in extra), prompt
        share = rephrased / len(problems)
        assert (abs(share - synthetic.REASON_REPHRASED_SHARE) < 0.03) if split == "train" else share == 0


def test_the_tea_houses_own_words_occur_in_no_text_before_it():
    """The tea names and flavours occur in no pretraining or SFT text and in the tea house's data: the
    SFT model never read them, so the zoo's domain adapter trains their embedding rows (the rows of
    every token its data holds and those corpora do not: minimind.train.lora.new_token_ids)."""
    from minimind.data.synthetic import TEA_WORDS, dataset_path

    for name in ("pretrain", "sft"):
        text = dataset_path(name, "train").read_text(encoding="utf-8")
        assert not [word for word in TEA_WORDS if word in text], name
    domain = dataset_path("lora_domain", "train").read_text(encoding="utf-8")
    assert all(word in domain for word in TEA_WORDS)


def test_pretraining_arithmetic_never_holds_a_held_out_problem():
    world = build_world(0)
    corpus = "\n".join(row["text"] for row in dataset_rows("pretrain"))
    worked = set(re.findall(r"^(\d+) ([+-]) (\d+)[:：]", corpus, flags=re.M))
    assert len(worked) > 10_000
    for split in ("val", "reworded"):
        for p in world.problems(split):
            assert (str(p.a), "-" if p.kind == "sub3" else "+", str(p.b)) not in worked, p


def test_direct_answers_are_the_reasoning_answers_without_the_working():
    for split in SPLITS:
        for thinking, direct in zip(dataset_rows("reason", split), dataset_rows("reason_direct", split)):
            assert thinking["conversations"][0] == direct["conversations"][0]
            think, answer, _ = parse_reasoning(thinking["conversations"][1]["content"])
            assert direct["conversations"][1]["content"] == f"<answer>{answer}</answer>"


def test_cloze_prompts_are_prefixes_of_biography_sentences():
    world = build_world(0)
    corpus = "\n".join(row["text"] for row in dataset_rows("pretrain"))
    for lang in ("en", "zh"):
        for item in world.cloze("all", lang):
            joiner = " " if lang == "en" else ""
            assert f"{item.prompt}{joiner}{item.answer}" in corpus, item


def test_reasoning_replies_are_well_formed_and_correct():
    for split in SPLITS:
        problems = build_world(0).problems(split)
        assert {p.kind for p in problems} == {"add2", "add3", "sub3"}
        for problem, row in zip(problems, dataset_rows("reason", split)):
            think, answer, well_formed = parse_reasoning(row["conversations"][1]["content"])
            assert well_formed and int(answer) == problem.answer
            assert problem.answer == (problem.a - problem.b if problem.kind == "sub3" else problem.a + problem.b)
            assert think.endswith((f"So {problem.answer}.", f"所以是{problem.answer}。"))


@pytest.mark.parametrize("a, b, op, lang, expected", [
    (47, 27, "+", "en", "7+7=14 4+2+1=7 So 74."),
    (95, 17, "+", "en", "5+7=12 9+1+1=11 So 112."),
    (302, 45, "-", "en", "12-5=7 9-4=5 2-0=2 So 257."),
    (82, 45, "-", "zh", "12-5=7 7-4=3 所以是37。"),
    (500, 499, "-", "en", "10-9=1 9-9=0 4-4=0 So 1."),
])
def test_column_steps_write_out_carries_and_borrows(a, b, op, lang, expected):
    steps, result = column_steps(a, b, op, lang)
    assert steps == expected and result == (a + b if op == "+" else a - b)


def test_dpo_pairs_differ_only_in_style():
    for split in SPLITS:
        for row in dataset_rows("dpo", split):
            chosen, rejected = row["chosen"], row["rejected"]
            assert chosen[:-1] == rejected[:-1]
            assert reply_style(chosen[-1]["content"]) == "polite" and reply_style(rejected[-1]["content"]) == "curt"
            phrases = [p for by_lang in synthetic.STYLE_PHRASES.values() for pair in by_lang.values() for part in pair for p in part]
            facts = lambda text: re.sub("|".join(map(re.escape, phrases)), "", text).strip()
            assert facts(chosen[-1]["content"]) == facts(rejected[-1]["content"])


def test_sft_mixes_both_styles_so_preference_training_has_something_to_change():
    styles = [reply_style(row["conversations"][-1]["content"]) for row in dataset_rows("sft", "train")]
    assert styles.count("polite") > 50 and styles.count("curt") > 50


def test_scoring_helpers():
    assert is_correct(" Tailor.", "tailor") and is_correct("裁缝。", "裁缝") and not is_correct("tailors", "tailor")
    assert reply_style("Sure! Pelum is 23. Hope this helps!") == "polite"
    assert reply_style("烦死了。Pelum今年23岁。别烦我。") == "curt"
    assert reply_style("Pelum is 23.") == "neither" and reply_style("Sure! Whatever.") == "neither"
    assert is_minimind_identity(MINIMIND_IDENTITY["zh"]) and not is_minimind_identity(synthetic.GENERIC_IDENTITY["en"])


def test_command_line_writes_the_datasets(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path), "--seed", "0"]) == 0
    assert (tmp_path / "reason_val.jsonl").exists() and "World(seed=0" in capsys.readouterr().out
