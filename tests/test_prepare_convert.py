"""Converters of `minimind.data.convert`: foreign formats → MiniMind's schemas and back."""
import json

import pytest

from minimind.data import convert as C
from minimind.data.filters import RecordError
from minimind.data.prepare import main

OPENAI = [
    {"id": "a1", "messages": [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "What is 2+2?"},
                              {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你？"},
                  {"role": "user", "content": "讲个笑话"}, {"role": "assistant", "content": "好的……"}]},
]
SHAREGPT = [
    {"id": 7, "system": "You are MiniMind.", "conversations": [{"from": "human", "value": "Who are you?"},
                                                               {"from": "gpt", "value": "I am MiniMind."}]},
    {"conversations": [{"from": "human", "value": "北京在哪里？"}, {"from": "gpt", "value": "在中国北方。"}]},
]
PREFERENCE = [
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome, I think.", "source": "fixture"},
    {"system": "Answer politely.", "prompt": "谢谢", "chosen": "不客气！", "rejected": "哦。"},
]
REASONING_OPENAI = [
    {"messages": [{"role": "user", "content": "12+30?"},
                  {"role": "assistant", "reasoning_content": "12+30 = 42.", "content": "42"}]},
]


@pytest.mark.parametrize("record", OPENAI)
def test_openai_round_trip(record):
    minimind = C.openai_to_minimind(record)
    assert minimind["conversations"] == record["messages"]
    assert set(minimind) - {"conversations"} == set(record) - {"messages"}
    assert C.minimind_to_openai(minimind) == record


@pytest.mark.parametrize("record", SHAREGPT)
def test_sharegpt_round_trip(record):
    minimind = C.sharegpt_to_minimind(record)
    roles = [message["role"] for message in minimind["conversations"]]
    assert roles == (["system"] if "system" in record else []) + ["user", "assistant"]
    assert C.minimind_to_sharegpt(minimind) == record


@pytest.mark.parametrize("record", PREFERENCE)
def test_preference_round_trip(record):
    dpo = C.preference_to_dpo(record)
    assert dpo["chosen"][:-1] == dpo["rejected"][:-1]
    assert dpo["chosen"][-1] == {"role": "assistant", "content": record["chosen"]}
    assert dpo["rejected"][-1] == {"role": "assistant", "content": record["rejected"]}
    assert C.dpo_to_preference(dpo) == record


@pytest.mark.parametrize("record", REASONING_OPENAI)
def test_reasoning_round_trip(record):
    minimind = C.reasoning_to_minimind(record)
    assert minimind["conversations"][-1] == {"role": "assistant",
                                              "content": "<think>\n12+30 = 42.\n</think>\n<answer>\n42\n</answer>"}
    assert C.minimind_reasoning_to_openai(minimind) == record


def test_openai_aliases_and_text_parts():
    record = {"messages": [{"role": "developer", "content": "rules"},
                           {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                           {"role": "assistant", "content": "ok", "name": None}]}
    assert C.openai_to_minimind(record)["conversations"] == [
        {"role": "system", "content": "rules"}, {"role": "user", "content": "ab"}, {"role": "assistant", "content": "ok"}]


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "'image_url' is not text"),
    ({"messages": [{"role": "tool", "content": "{}"}]}, "role 'tool' has no MiniMind role"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}]}, "tool_calls"),
    ({"messages": []}, "non-empty list"),
])
def test_openai_records_that_cannot_convert_say_why(record, message):
    with pytest.raises(RecordError, match=message):
        C.openai_to_minimind(record)


def test_sharegpt_role_names_map_to_minimind_roles():
    record = {"conversations": [{"from": "user", "value": "q"}, {"from": "chatgpt", "value": "a"},
                                {"from": "human", "value": "q2"}, {"from": "model", "value": "a2"}]}
    roles = [message["role"] for message in C.sharegpt_to_minimind(record)["conversations"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    with pytest.raises(RecordError, match="from 'observation'"):
        C.sharegpt_to_minimind({"conversations": [{"from": "observation", "value": "x"}]})


def test_trl_conversational_preference_rows():
    record = {"prompt": [{"role": "user", "content": "hi"}],
              "chosen": [{"role": "assistant", "content": "hello!"}],
              "rejected": [{"role": "assistant", "content": "what"}]}
    dpo = C.preference_to_dpo(record)
    assert dpo == {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}],
                   "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "what"}]}


def test_sft_to_pretrain_joins_user_and_assistant_text():
    record = C.sharegpt_to_minimind(SHAREGPT[0])
    assert C.sft_to_pretrain(record) == {"text": "Who are you?\nI am MiniMind."}
    assert C.sft_to_pretrain(record, roles=("assistant",)) == {"text": "I am MiniMind."}


def test_pack_texts_fills_up_to_the_limit_and_loses_nothing():
    texts = [{"text": t} for t in ["aaaa", "bbb", "cc", "dddddddddddd", "e"]]
    packed = list(C.pack_texts(texts, max_chars=8, separator="|"))
    assert packed == [{"text": "aaaa|bbb"}, {"text": "cc"}, {"text": "dddddddddddd"}, {"text": "e"}]
    assert "|".join(p["text"] for p in packed) == "|".join(t["text"] for t in texts)


@pytest.mark.parametrize("record", [
    {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>\nstep\n</think>\n<answer>\nA\n</answer>"}]},
    {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>step</think>\n\nA"}]},
    {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A", "reasoning_content": "step"}]},
    {"question": "q", "reasoning": "step", "answer": "A"},
    {"problem": "q", "cot": "step", "solution": "A"},
])
def test_every_reasoning_source_gives_the_tagged_format(record):
    converted = C.reasoning_to_minimind(record)
    assert converted["conversations"] == [{"role": "user", "content": "q"},
                                          {"role": "assistant", "content": "<think>\nstep\n</think>\n<answer>\nA\n</answer>"}]


def test_reasoning_without_a_think_block_is_an_error():
    with pytest.raises(RecordError, match="no leading <think>"):
        C.reasoning_to_minimind({"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]})


@pytest.mark.parametrize("record, kind", [
    ({"text": "x"}, "pretrain"), (OPENAI[0], "openai"), (SHAREGPT[0], "sharegpt"),
    (C.sharegpt_to_minimind(SHAREGPT[0]), "minimind"), (PREFERENCE[0], "preference"),
    (C.preference_to_dpo(PREFERENCE[0]), "dpo"), ({"question": "q", "reasoning": "r", "answer": "a"}, "reasoning"),
])
def test_detect_record_format(record, kind):
    assert C.detect_record_format(record) == kind


def test_convert_record_dispatches_and_refuses_impossible_conversions():
    assert C.convert_record(SHAREGPT[1], "openai") == {"messages": [{"role": "user", "content": "北京在哪里？"},
                                                                    {"role": "assistant", "content": "在中国北方。"}]}
    assert C.convert_record(OPENAI[0], "sharegpt")["system"] == "Be brief."
    with pytest.raises(RecordError, match="not a preference pair"):
        C.convert_record(OPENAI[0], "dpo")
    with pytest.raises(RecordError, match="no conversation"):
        C.convert_record({"text": "x"}, "minimind")


def _write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("source, to, back", [
    (OPENAI, "minimind", "openai"), (SHAREGPT, "minimind", "sharegpt"), (PREFERENCE, "dpo", "preference"),
])
def test_convert_command_round_trips_a_file(tmp_path, capsys, source, to, back):
    _write(tmp_path / "in.jsonl", source)
    assert main(["convert", str(tmp_path / "in.jsonl"), str(tmp_path / "mid.jsonl"), "--to", to]) == 0
    assert main(["convert", str(tmp_path / "mid.jsonl"), str(tmp_path / "out.jsonl"), "--to", back]) == 0
    assert _read(tmp_path / "out.jsonl") == source
    assert f"read     {len(source):>10}" in capsys.readouterr().out


def test_convert_command_names_file_and_line_of_an_unconvertible_record(tmp_path, capsys):
    _write(tmp_path / "in.jsonl", [OPENAI[0], {"messages": [{"role": "tool", "content": "x"}]}])
    assert main(["convert", str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), "--to", "minimind"]) == 2
    assert f"{tmp_path / 'in.jsonl'}:2: messages[0]: role 'tool'" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()  # nothing half-written


def test_sft_to_pretrain_with_packing_from_the_command_line(tmp_path, capsys):
    _write(tmp_path / "sft.jsonl", [C.sharegpt_to_minimind(r) for r in SHAREGPT] * 3)
    argv = ["convert", str(tmp_path / "sft.jsonl"), str(tmp_path / "pre.jsonl"), "--to", "pretrain", "--pack-chars", "60"]
    assert main(argv) == 0
    texts = [r["text"] for r in _read(tmp_path / "pre.jsonl")]
    assert all(len(text) <= 60 for text in texts) and len(texts) < 6
    assert "".join(texts).count("I am MiniMind.") == 3
    assert "written" in capsys.readouterr().out


def test_sharegpt_self_check_accepts_the_reference_and_rejects_a_converter_that_drops_fields():
    from minimind.checks.data import check_sharegpt_to_minimind

    check_sharegpt_to_minimind(C.sharegpt_to_minimind)
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    forgets_fields = lambda r: {"conversations": [{"role": roles[t["from"]], "content": t["value"]}  # noqa: E731
                                                  for t in r["conversations"]]}
    with pytest.raises(AssertionError, match="top-level 'system'"):
        check_sharegpt_to_minimind(forgets_fields)
