"""The server's tools, through the official `openai` client, in process on a scripted model (the
tiny model whose logits write a chosen reply): `tools` rendered into the prompt, `tool_calls` with
finish_reason "tool_calls" (whole and streamed as OpenAI's deltas), `tool` messages, `tool_choice`
auto / none / required / named, parallel_tool_calls, malformed calls left as text, reasoning, and
bad tool schemas answered 400 with the field named."""
import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
from minimind import serve  # noqa: E402
from minimind.tokenizer import tool_call_opening  # noqa: E402
from minimind.tools import default_registry  # noqa: E402
from inference_helpers import ScriptedModel, tiny_model, tiny_tokenizer  # noqa: E402

TOOLS = default_registry().schemas()
QUESTION = [{"role": "user", "content": "What is 6*7?"}]


def call_text(name, arguments) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(arguments)}}}\n</tool_call>'


class Script:
    """The reply for the next prompt: a fixed text, or a function of the prompt."""

    def __init__(self):
        self.reply = "Hello."

    def __call__(self, prompt: str) -> str:
        return self.reply(prompt) if callable(self.reply) else self.reply


@pytest.fixture(scope="module")
def scripted():
    tokenizer = tiny_tokenizer()
    script = Script()
    model = ScriptedModel(tiny_model(tokenizer.vocab_size, max_position_embeddings=4096), tokenizer, script)
    app = serve.create_app(model, tokenizer, model_name="minimind", default_max_tokens=200,
                           limits=serve.ServerLimits(max_tokens=1024))
    with running(app) as base:
        yield {"base": base, "model": model, "tokenizer": tokenizer, "script": script}


@contextmanager
def running(app):
    import uvicorn

    sock = serve.listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(serve.uvicorn_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture()
def client(scripted):
    return openai.OpenAI(base_url=f"{scripted['base']}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, messages=QUESTION, **fields):
    return client.chat.completions.create(model="minimind", messages=messages, temperature=0, **fields)


def test_a_call_comes_back_as_tool_calls_with_finish_reason_tool_calls(scripted, client):
    scripted["script"].reply = call_text("calculator", {"expression": "6*7"})
    completion = ask(client, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "calculator" and json.loads(call.function.arguments) == {"expression": "6*7"}
    # what the model was given: the template's rendering with the signatures in the system turn
    tokenizer = scripted["tokenizer"]
    assert scripted["model"].prompts[-1] == tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True,
                                                                          tools=TOOLS)
    assert "<tools>\n" + json.dumps(TOOLS[0], ensure_ascii=False) in scripted["model"].prompts[-1]


def test_streamed_tool_calls_are_openai_deltas_the_client_assembles(scripted, client):
    from openai.lib.streaming.chat import ChatCompletionStreamState

    scripted["script"].reply = "Two lookups.\n" + call_text("lookup_person", {"name": "Pelum"}) + "\n" + \
        call_text("calculator", {"expression": "23+1"})
    state = ChatCompletionStreamState()
    chunks = list(ask(client, tools=TOOLS, stream=True))
    for chunk in chunks:
        state.handle_chunk(chunk)
    message = state.get_final_completion().choices[0].message
    assert message.content == "Two lookups."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("lookup_person", {"name": "Pelum"}), ("calculator", {"expression": "23+1"})]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    first = [d.tool_calls[0] for d in deltas if d.tool_calls and d.tool_calls[0].id]
    assert [(d.index, d.type, d.function.name, d.function.arguments) for d in first] == [
        (0, "function", "lookup_person", ""), (1, "function", "calculator", "")]
    assert not any("<tool_call>" in (d.content or "") for d in deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_results_in_the_request_are_rendered_and_answered(scripted, client):
    scripted["script"].reply = lambda prompt: "6*7 = 42." if "<tool_response>\n42\n</tool_response>" in prompt else "?"
    messages = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    completion = ask(client, messages=messages, tools=TOOLS)
    assert completion.choices[0].message.content == "6*7 = 42." and completion.choices[0].finish_reason == "stop"
    assert scripted["model"].prompts[-1] == scripted["tokenizer"].apply_chat_template(
        messages, add_generation_prompt=True, tools=TOOLS)


def test_tool_choice_none_offers_no_tools_and_parses_no_calls(scripted, client):
    scripted["script"].reply = call_text("calculator", {"expression": "1"})
    choice = ask(client, tools=TOOLS, tool_choice="none").choices[0]
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    assert choice.message.content == call_text("calculator", {"expression": "1"})
    assert "<tools>" not in scripted["model"].prompts[-1]


@pytest.mark.parametrize("tool_choice, name", [
    ({"type": "function", "function": {"name": "calculator"}}, "calculator"), ("required", None)])
def test_a_forced_call_opens_the_call_in_the_prompt(scripted, client, tool_choice, name):
    continuation = '{"expression": "2+2"}}\n</tool_call>' if name else 'calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'
    scripted["script"].reply = continuation
    choice = ask(client, tools=TOOLS, tool_choice=tool_choice).choices[0]
    assert scripted["model"].prompts[-1].endswith("<|im_start|>assistant\n" + tool_call_opening(name))
    assert choice.finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("calculator", {"expression": "2+2"})]


@pytest.mark.parametrize("reply", [
    call_text("rm_rf", {"path": "/"}),
    '<tool_call>\n{"name": "calculator", "arguments": {"expression": \n</tool_call>',
    '<tool_call>\n{"name": "calculator"}\n</tool_call>',
    '<tool_call>\n{"name": "calculator", "arguments": {"expr',  # cut off: never closed
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_call_stays_the_text_the_model_wrote(scripted, client, reply, stream):
    scripted["script"].reply = "Hm. " + reply
    if stream:
        from openai.lib.streaming.chat import ChatCompletionStreamState

        state = ChatCompletionStreamState()
        for chunk in ask(client, tools=TOOLS, stream=True):
            state.handle_chunk(chunk)
        choice = state.get_final_completion().choices[0]
    else:
        choice = ask(client, tools=TOOLS).choices[0]
    assert choice.message.content == "Hm." + reply and not choice.message.tool_calls
    assert choice.finish_reason == "stop"


def test_parallel_tool_calls_false_returns_the_first_call_only(scripted, client):
    scripted["script"].reply = call_text("calculator", {"expression": "1"}) + "\n" + call_text("calculator", {"expression": "2"})
    assert len(ask(client, tools=TOOLS).choices[0].message.tool_calls) == 2
    (call,) = ask(client, tools=TOOLS, parallel_tool_calls=False).choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"expression": "1"}


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_before_a_call_is_reasoning_content(scripted, client, stream):
    scripted["script"].reply = "<think>\nI need the calculator.\n</think>\n" + call_text("calculator", {"expression": "6*7"})
    if stream:
        chunks = [c for c in ask(client, tools=TOOLS, stream=True) if c.choices]
        reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)
        names = [c.choices[0].delta.tool_calls[0].function.name for c in chunks
                 if c.choices[0].delta.tool_calls and c.choices[0].delta.tool_calls[0].id]
        finish = chunks[-1].choices[0].finish_reason
    else:
        message = ask(client, tools=TOOLS).choices[0]
        reasoning, names, finish = message.message.reasoning_content, [c.function.name for c in message.message.tool_calls], \
            message.finish_reason
    assert (reasoning, names, finish) == ("I need the calculator.", ["calculator"], "tool_calls")


def test_without_tools_a_call_shaped_reply_is_plain_content(scripted, client):
    scripted["script"].reply = call_text("calculator", {"expression": "1"})
    choice = ask(client).choices[0]
    assert choice.message.content == call_text("calculator", {"expression": "1"}) and choice.finish_reason == "stop"


GOOD_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("fields, param", [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": ["calculator"]}, "tools.0"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools.0.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": [GOOD_TOOL, GOOD_TOOL]}, "tools.1.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     "tools.0.function.parameters.type"),
    ({"tools": [GOOD_TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice.function.name"),
    ({"tools": [GOOD_TOOL], "tool_choice": "always"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [GOOD_TOOL], "tool_choice": "required", "enable_thinking": True}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}]},
     "messages.0.tool_calls.0.function.name"),
    ({"messages": [{"role": "tool", "content": 42}]}, "messages.0.content"),
])
def test_bad_tool_requests_are_400_naming_the_field(scripted, fields, param):
    body = {"model": "minimind", "messages": QUESTION, "max_tokens": 4, **fields}
    response = httpx.post(f"{scripted['base']}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error


def test_the_official_client_raises_bad_request_for_a_bad_schema_and_the_server_goes_on(scripted, client):
    with pytest.raises(openai.BadRequestError):
        ask(client, tools=[{"type": "function", "function": {"name": "has space"}}])
    scripted["script"].reply = "Still here."
    assert ask(client, tools=TOOLS).choices[0].message.content == "Still here."

