"""Tool use: parsing calls from replies (whole and streamed in any pieces, malformed calls reported),
checking signatures and arguments, the calculator and the synthetic-world directory, and a
registry that answers every failure with a tool message instead of raising."""
import json
import random

import pytest

from minimind.data.synthetic import build_world
from minimind.tokenizer import TOOL_ROLE, tool_call_opening
from minimind.tools import (
    MalformedToolCall, ToolCall, ToolCallStream, ToolError, ToolRegistry, ToolSchemaError, Tool, argument_problem,
    assistant_message, calculate, calculator, check_tool_schemas, collect, default_registry, lookup_person,
    parse_tool_calls,
)

NAMES = ["calculator", "lookup_person"]


def call_block(name, arguments) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments, ensure_ascii=False)}}}\n</tool_call>'


REPLY = ("Let me check that.\n" + call_block("lookup_person", {"name": "Pelum"}) + "\n"
         + call_block("calculator", {"expression": "23+4"}))


def test_a_reply_with_two_calls_splits_into_content_and_calls():
    parsed = parse_tool_calls(REPLY, NAMES)
    assert parsed.content == "Let me check that."
    assert [(c.name, c.arguments) for c in parsed.calls] == [("lookup_person", {"name": "Pelum"}),
                                                              ("calculator", {"expression": "23+4"})]
    assert not parsed.malformed and len({c.id for c in parsed.calls}) == 2
    assert parsed.calls[0].openai() == {"id": parsed.calls[0].id, "type": "function",
                                        "function": {"name": "lookup_person", "arguments": '{"name": "Pelum"}'}}


def test_text_without_calls_is_all_content_and_text_around_calls_is_kept():
    assert parse_tool_calls("Pelum is 23 <tool (not a call)", NAMES).content == "Pelum is 23 <tool (not a call)"
    parsed = parse_tool_calls("Before. " + call_block("calculator", {"expression": "1"}) + "  After.", NAMES)
    assert parsed.content == "Before.After." and len(parsed.calls) == 1


@pytest.mark.parametrize("body, reason", [
    ('{"name": "calculator", "arguments": {"expression": "1+1"}', "not valid JSON"),
    ('["calculator"]', "must be a JSON object"),
    ('{"arguments": {}}', 'no "name"'),
    ('{"name": "rm_rf", "arguments": {}}', "unknown tool 'rm_rf' (the tools are: calculator, lookup_person)"),
    ('{"name": "calculator"}', 'has no "arguments"'),
    ('{"name": "calculator", "arguments": "1+1"}', "must be a JSON object"),
])
def test_malformed_calls_are_reported_with_their_text_and_reason(body, reason):
    text = f"<tool_call>\n{body}\n</tool_call>"
    parsed = parse_tool_calls("Sure. " + text, NAMES)
    assert parsed.content == "Sure." and not parsed.calls
    (bad,) = parsed.malformed
    assert bad.text == text and reason in bad.reason


def test_arguments_given_as_a_json_string_are_read_as_the_object():
    (call,) = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"2\\"}"}</tool_call>',
                               NAMES).calls
    assert call.arguments == {"expression": "2"}


def test_a_call_that_is_never_closed_is_malformed_not_lost():
    parsed = parse_tool_calls('Hm. <tool_call>\n{"name": "calculator", "argu', NAMES)
    assert parsed.content == "Hm." and "not closed" in parsed.malformed[0].reason
    assert parsed.malformed[0].text == '<tool_call>\n{"name": "calculator", "argu'


@pytest.mark.parametrize("text", [
    REPLY, REPLY + "\nDone.", "no calls at all  ", "  <tool_call>\n{bad}\n</tool_call> x ", "a <tool_cal b",
    call_block("calculator", {"expression": "1"}) + "\n\n" + call_block("calculator", {"expression": "2"}),
    "<tool_call>" + "unterminated", "tail <tool_c",
])
def test_streaming_in_any_pieces_gives_the_same_parse(text):
    whole = parse_tool_calls(text, NAMES)
    rng = random.Random(0)
    for _ in range(40):
        stream, events, start = ToolCallStream(NAMES), [], 0
        while start < len(text):
            size = rng.randint(1, 7)
            events += stream.feed(text[start:start + size])
            start += size
        streamed = collect(events + stream.flush())
        assert streamed.content == whole.content
        assert [(c.name, c.arguments) for c in streamed.calls] == [(c.name, c.arguments) for c in whole.calls]
        assert [(m.text, m.reason) for m in streamed.malformed] == [(m.text, m.reason) for m in whole.malformed]


def test_streamed_content_never_shows_a_half_tag_and_a_call_comes_when_it_closes():
    text = "ok <tool_call>" + '{"name": "calculator", "arguments": {"expression": "1"}}' + "</tool_call>"
    stream, content, call_at = ToolCallStream(NAMES), "", None
    for position, character in enumerate(text):
        for kind, value in stream.feed(character):
            if kind == "content":
                content += value
            else:
                call_at = position
    assert content == "ok" and call_at == len(text) - 1


def test_the_assistant_message_keeps_calls_and_the_text_of_malformed_ones():
    parsed = parse_tool_calls("Hi.\n" + call_block("calculator", {"expression": "2"}) + "<tool_call>oops</tool_call>", NAMES)
    message = assistant_message(parsed)
    assert message["content"] == "Hi.\n<tool_call>oops</tool_call>"
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["calculator"]
    assert "tool_calls" not in assistant_message(parse_tool_calls("plain", NAMES))


def test_a_parsed_reply_renders_back_into_the_text_the_model_wrote(book_tokenizer):
    messages = [{"role": "user", "content": "Pelum?"}]
    parsed = parse_tool_calls(REPLY, NAMES)
    rendered = book_tokenizer.apply_chat_template(messages + [assistant_message(parsed)])
    assert rendered.endswith("<|im_start|>assistant\n" + REPLY + "<|im_end|>\n")


def test_a_forced_call_parses_once_its_opening_is_prepended():
    generated = '{"expression": "6*7"}}\n</tool_call>'
    (call,) = parse_tool_calls(tool_call_opening("calculator") + generated, NAMES).calls
    assert (call.name, call.arguments) == ("calculator", {"expression": "6*7"})


# ---------------------------------------------------------------------------------------------
# Signatures and arguments

@pytest.mark.parametrize("tools, param", [
    ({"type": "function"}, "tools"),
    (["calculator"], "tools.0"),
    ([{"type": "retrieval"}], "tools.0.type"),
    ([{"type": "function"}], "tools.0.function"),
    ([{"type": "function", "function": {"name": "has space"}}], "tools.0.function.name"),
    ([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}],
     "tools.1.function.name"),
    ([{"type": "function", "function": {"name": "f", "description": 3}}], "tools.0.function.description"),
    ([{"type": "function", "function": {"name": "f", "parameters": []}}], "tools.0.function.parameters"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], "tools.0.function.parameters.type"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "str"}}}}}],
     "tools.0.function.parameters.properties.x.type"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": "x"}}}],
     "tools.0.function.parameters.required"),
])
def test_bad_tool_signatures_name_the_field(tools, param):
    with pytest.raises(ToolSchemaError) as error:
        check_tool_schemas(tools)
    assert error.value.param == param


def test_the_registry_signatures_are_valid_and_bilingual():
    schemas = default_registry().schemas()
    assert check_tool_schemas(schemas) == schemas
    assert [s["function"]["name"] for s in schemas] == NAMES
    assert all("计算" in s["function"]["description"] or "查询" in s["function"]["description"] for s in schemas)


@pytest.mark.parametrize("arguments, problem", [
    ({}, "missing argument 'name'"),
    ({"name": "A", "age": 3}, "unknown argument 'age'"),
    ({"name": 3}, "argument 'name' must be string"),
    ({"name": "A", "lang": "fr"}, "argument 'lang' must be one of 'en', 'zh'"),
    ({"name": "A", "attribute": "colour"}, None),
])
def test_arguments_are_checked_against_the_signature(arguments, problem):
    result = argument_problem(lookup_person().parameters, arguments)
    assert result == problem if problem is None else problem in result


def test_integer_and_boolean_arguments_are_told_apart():
    parameters = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert argument_problem(parameters, {"n": 3}) is None and argument_problem(parameters, {"n": 3.0}) is None
    assert "must be integer" in argument_problem(parameters, {"n": True})
    assert "must be integer" in argument_problem(parameters, {"n": 2.5})


# ---------------------------------------------------------------------------------------------
# The calculator

@pytest.mark.parametrize("expression, value", [
    ("17*3", "51"), ("(12+30)/7", "6"), ("7/2", "3.5"), ("1/3", "0.333333333333"), ("2**10", "1024"),
    ("2^10", "1024"), ("10//3", "3"), ("10 % 4", "2"), ("-(2+3)*4", "-20"), ("1,234 + 1 =", "1235"),
    ("17×3", "51"), ("（12＋30）÷7", "6"), ("６乘７", "42"), ("100 减 1", "99"), ("0.1+0.2", "0.3"),
    ("123456789*987654321", "121932631112635269"),
])
def test_the_calculator_evaluates_arithmetic_in_either_script(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize("expression, reason", [
    ("", "empty"), ("1/0", "divides by zero"), ("2**1000", "exponents up to 64"), ("(-8)**0.5", "no real value"),
    ("__import__('os').system('true')", "not plain arithmetic"), ("x + 1", "not plain arithmetic"),
    ("1 +", "not an arithmetic expression"), ("9" * 40, "too large"), ("1" * 300, "longer than 200"),
    ("10**30 * 10**30", "too large"),
])
def test_the_calculator_refuses_what_is_not_bounded_arithmetic(expression, reason):
    with pytest.raises(ToolError, match=reason):
        calculate(expression)


# ---------------------------------------------------------------------------------------------
# The directory over the synthetic world

def test_lookup_person_returns_a_persons_facts_in_english_or_chinese():
    person = build_world(0).people[7]
    registry = default_registry()
    answer = registry.run(ToolCall("lookup_person", {"name": person.name.upper()}))
    assert json.loads(answer["content"]) == {"name": person.name, "age": person.age, "city": person.city,
                                             "job": person.job, "pet": person.pet, "colour": person.colour}
    chinese = registry.run(ToolCall("lookup_person", {"name": person.name, "attribute": "job", "lang": "zh"}))
    assert json.loads(chinese["content"]) == {"name": person.name, "job": person.value("job", "zh")}


def test_an_unknown_person_is_an_error_message_with_close_names():
    person = build_world(0).people[3]
    answer = default_registry().run(ToolCall("lookup_person", {"name": person.name[:-1] + "x"}))
    assert answer["content"].startswith(f"error: lookup_person: no person named '{person.name[:-1]}x'")
    assert person.name in answer["content"]


# ---------------------------------------------------------------------------------------------
# The registry never raises

def test_every_failure_comes_back_as_a_tool_message():
    def broken(**_):
        raise RuntimeError("disk on fire")

    registry = ToolRegistry([calculator(), Tool("broken", "always fails", {"type": "object", "properties": {}}, broken)])
    cases = {
        "error: calculator: '1/0' divides by zero": ToolCall("calculator", {"expression": "1/0"}),
        "error: calculator: missing argument 'expression'": ToolCall("calculator", {}),
        "error: unknown tool 'lookup_person' (the tools are: calculator, broken)": ToolCall("lookup_person", {"name": "A"}),
        "error: broken failed (RuntimeError: disk on fire)": ToolCall("broken", {}),
        "error: the call is not valid JSON (Expecting value at character 0)": MalformedToolCall("<tool_call>x</tool_call>",
                                                                                          "the call is not valid JSON "
                                                                                          "(Expecting value at character 0)"),
    }
    for expected, call in cases.items():
        message = registry.run(call)
        assert message["role"] == TOOL_ROLE and message["content"] == expected
        if isinstance(call, ToolCall):
            assert message["tool_call_id"] == call.id


def test_respond_answers_calls_and_malformed_calls_in_order():
    parsed = parse_tool_calls(call_block("calculator", {"expression": "2*21"}) + "<tool_call>{}</tool_call>", NAMES)
    answers = default_registry().respond(parsed)
    assert [a["content"] for a in answers] == ["42", 'error: the call has no "name" (a string)']


def test_a_whole_round_renders_with_the_minimind2_template(book_tokenizer):
    registry = default_registry()
    messages = [{"role": "user", "content": "What is 6*7?"}]
    parsed = parse_tool_calls(call_block("calculator", {"expression": "6*7"}), registry.names)
    messages += [assistant_message(parsed), *registry.respond(parsed)]
    text = book_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=registry.schemas())
    assert text.endswith('<|im_start|>assistant\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n'
                         "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n"
                         "<|im_start|>assistant\n")


# ---------------------------------------------------------------------------------------------
# The tool conversations the book trains on, and the loop that answers with tools

def test_the_training_conversations_offer_the_registrys_tools_and_hold_its_answers():
    """Every tool message of the tools dataset is what the registry answers to the call before it,
    so a model learns from exactly what the tools will say (errors included)."""
    from minimind.data.synthetic import dataset_rows

    registry = default_registry()
    kinds = {"calculator": 0, "lookup_person": 0, "error": 0, "no call": 0, "no tools": 0}
    for split in ("train", "val"):
        for row in dataset_rows("tools", split):
            messages = row["conversations"]
            if messages[0]["role"] != "system":
                kinds["no tools"] += 1
                continue
            assert messages[0]["tools"] == registry.schemas()
            calls = [m for m in messages if m.get("tool_calls")]
            kinds["no call"] += not calls
            for index, message in enumerate(messages):
                if message["role"] != TOOL_ROLE:
                    continue
                function = messages[index - 1]["tool_calls"][0]["function"]
                answer = registry.run(ToolCall(function["name"], function["arguments"]))
                assert answer["content"] == message["content"], (function, message)
                kinds["error" if message["content"].startswith("error:") else function["name"]] += 1
    assert all(count > 0 for count in kinds.values()), kinds


def test_strangers_name_nobody_in_the_world_and_differ_between_splits():
    from minimind.data.synthetic import MAX_STRANGERS, stranger_questions

    world = build_world(0)
    train, val = world.strangers(MAX_STRANGERS, "train"), world.strangers(MAX_STRANGERS, "val")
    names = {p.name.casefold() for p in world.people}
    assert not names & {n.casefold() for n in train + val} and not set(train) & set(val)
    assert world.strangers(20, "val") == val[:20]  # fewer names are the first ones
    assert [item.subject for item in stranger_questions(world, "val", 20)] == val[:20]
    with pytest.raises(ValueError, match="count must be between 0 and"):
        world.strangers(MAX_STRANGERS + 1, "train")


class ScriptedModel:
    """Stands in for a model in `tool_replies`: `generate_batch` is patched to hand out the texts."""

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_tool_replies_runs_the_calls_and_feeds_the_answers_back(monkeypatch, book_tokenizer):
    import minimind.generate
    from minimind.eval.replies import tool_replies

    person = build_world(0).people[0]
    rounds = {  # per question, what the "model" writes in each round
        "What is 123 plus 456?": [call_block("calculator", {"expression": "123+456"}), "579"],
        "Where does X live?": [call_block("lookup_person", {"name": person.name, "attribute": "city"}), person.city],
        "Hi!": ["Hello!"],
        "Broken": ["<tool_call>\n{not json}\n</tool_call>", "sorry"],
        "Loops": [call_block("calculator", {"expression": "1"})] * 5,
    }
    seen_prompts = []

    def scripted(model, prompts, params, share_prefix=False):
        out = []
        for ids in prompts:
            seen_prompts.append(book_tokenizer.decode(ids))
            question = next(q for q in rounds if q in seen_prompts[-1])
            turn = seen_prompts[-1].count("<|im_start|>assistant") - 1
            out.append(book_tokenizer.encode(rounds[question][turn]))
        return out

    monkeypatch.setattr(minimind.generate, "generate_batch", scripted)
    uses = tool_replies(ScriptedModel(), book_tokenizer, list(rounds), default_registry(), max_rounds=3, batch_size=2)
    by_question = dict(zip(rounds, uses))
    assert by_question["What is 123 plus 456?"].reply == "579"
    assert by_question["What is 123 plus 456?"].messages[2]["content"] == "579"  # the tool's answer went back
    assert [c.arguments for c in by_question["Where does X live?"].calls] == [{"name": person.name, "attribute": "city"}]
    assert by_question["Where does X live?"].messages[2]["content"] == json.dumps({"name": person.name, "city": person.city})
    assert by_question["Hi!"].reply == "Hello!" and not by_question["Hi!"].calls
    assert len(by_question["Broken"].malformed) == 1 and by_question["Broken"].messages[2]["content"].startswith("error:")
    assert by_question["Broken"].reply == "sorry"
    assert by_question["Loops"].reply == "" and len(by_question["Loops"].calls) == 3  # stopped after max_rounds
    assert all("<tools>" in prompt for prompt in seen_prompts)  # every round offers the tools
