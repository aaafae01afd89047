"""The Streamlit demo, driven by Streamlit's AppTest: model choice, streamed greedy replies equal
to the chat module's, the thinking toggle, clearing, and the `minimind web` launcher."""
import json
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

import minimind.web as web
from minimind.inference import stream_reply
from minimind.generate import SamplingParams
from inference_helpers import save_tiny_checkpoint

APP = str(Path(web.__file__).resolve())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("web_a"), tmp_path_factory.mktemp("web_b")
    return {str(first): save_tiny_checkpoint(first, seed=0), str(second): save_tiny_checkpoint(second, seed=1)}


@pytest.fixture()
def app(checkpoints, monkeypatch):
    monkeypatch.setenv(web.MODELS_ENV, json.dumps(list(checkpoints)))
    monkeypatch.setenv(web.OPTIONS_ENV, json.dumps({"device": "cpu"}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def expected_reply(checkpoint, question, max_new_tokens, thinking=False):
    model, tokenizer = checkpoint
    params = SamplingParams.for_tokenizer(tokenizer, temperature=0.0, max_new_tokens=max_new_tokens)
    reply = stream_reply(model, tokenizer, [{"role": "user", "content": question}], params, enable_thinking=thinking)
    list(reply)
    return reply


def set_greedy(at, max_new_tokens=16):
    at.slider(key="temperature").set_value(0.0)
    at.slider(key="max_new_tokens").set_value(max_new_tokens)


def test_app_offers_the_configured_models(app, checkpoints):
    assert app.selectbox(key="model").options == list(checkpoints)
    assert app.title[0].value == "MiniMind chat"
    assert app.toggle(key="thinking").value is False


def test_greedy_reply_equals_the_chat_module(app, checkpoints):
    set_greedy(app)
    app.chat_input[0].set_value("Who are you?").run()
    assert not app.exception
    expected = expected_reply(checkpoints[app.selectbox(key="model").value], "Who are you?", 16)
    assistant = app.chat_message[1]
    assert assistant.name == "assistant"
    assert assistant.markdown[0].value == expected.content
    assert app.session_state["messages"][-1]["content"] == expected.content


def test_switching_model_changes_the_reply(app, checkpoints):
    set_greedy(app)
    second = list(checkpoints)[1]
    app.selectbox(key="model").set_value(second).run()
    app.chat_input[0].set_value("Who are you?").run()
    assert app.chat_message[1].markdown[0].value == expected_reply(checkpoints[second], "Who are you?", 16).content


def test_thinking_toggle_shows_reasoning(app, checkpoints):
    set_greedy(app, max_new_tokens=12)
    app.toggle(key="thinking").set_value(True).run()
    app.chat_input[0].set_value("What is 17 + 25?").run()
    assert not app.exception
    expected = expected_reply(checkpoints[app.selectbox(key="model").value], "What is 17 + 25?", 12, thinking=True)
    assert expected.reasoning
    assert app.session_state["messages"][-1]["reasoning"] == expected.reasoning
    assert app.expander[0].label == "Thinking"


def test_conversation_grows_and_clears(app):
    set_greedy(app, max_new_tokens=8)
    app.chat_input[0].set_value("first").run()
    app.chat_input[0].set_value("second").run()
    assert [m["role"] for m in app.session_state["messages"]] == ["user", "assistant", "user", "assistant"]
    assert len(app.chat_message) == 4
    app.button(key="clear").click().run()
    assert app.session_state["messages"] == [] and len(app.chat_message) == 0


def test_launcher_runs_streamlit_on_loopback(monkeypatch):
    calls = []
    monkeypatch.setattr(web.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    assert web.main(["--model", "a", "--model", "b", "--port", "8600"]) == 0
    command, env = calls[0]
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == APP
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8600"
    assert json.loads(env[web.MODELS_ENV]) == ["a", "b"]


def test_model_output_is_never_executed():
    source = Path(APP).read_text()
    assert "eval(" not in source and "exec(" not in source and "unsafe_allow_html" not in source


# ---------------------------------------------------------------------------------------------
# Tools: the calls a (scripted) model makes are shown, run, and their results fed back.

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


@pytest.fixture()
def tool_app(monkeypatch, request):
    import minimind.inference

    from inference_helpers import ScriptedModel, tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    replies = {"script": lambda prompt: "6*7 is 42." if "<tool_response>" in prompt else CALL}
    model = ScriptedModel(tiny_model(tokenizer.vocab_size, max_position_embeddings=4096), tokenizer,
                          lambda prompt: replies["script"](prompt))
    monkeypatch.setattr(minimind.inference, "load_chat_model", lambda *args: (model, tokenizer))
    # a name of its own per test: the app caches a loaded model by its name
    monkeypatch.setenv(web.MODELS_ENV, json.dumps([f"scripted-{request.node.name}"]))
    monkeypatch.setenv(web.OPTIONS_ENV, json.dumps({"device": "cpu"}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    set_greedy(at, max_new_tokens=256)
    return at, model, replies


def test_tools_toggle_runs_a_call_and_answers_with_its_result(tool_app):
    at, model, _ = tool_app
    at.toggle(key="tools").set_value(True).run()
    at.chat_input[0].set_value("What is 6*7?").run()
    assert not at.exception
    assert [m["role"] for m in at.session_state["messages"]] == ["user", "assistant", "tool", "assistant"]
    call, result, answer = at.session_state["messages"][1:]
    assert call["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}
    assert result["content"] == "42" and answer["content"] == "6*7 is 42."
    assert [m.name for m in at.chat_message] == ["user", "assistant", "tool", "assistant"]
    assert at.chat_message[1].code[0].value == 'calculator({"expression": "6*7"})'
    assert at.chat_message[2].code[0].value == "42"
    assert "<tool_response>\n42\n</tool_response>" in model.prompts[-1]
    at.chat_input[0].set_value("Thanks").run()  # the history with its call and result renders again
    assert not at.exception and at.chat_message[2].code[0].value == "42"


def test_a_malformed_call_is_flagged_and_answered_with_an_error(tool_app):
    at, model, replies = tool_app
    bad = '<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
    replies["script"] = lambda prompt: "Sorry." if "<tool_response>" in prompt else bad
    at.toggle(key="tools").set_value(True).run()
    at.chat_input[0].set_value("Weather?").run()
    assert not at.exception
    assert "unknown tool 'weather'" in at.warning[0].value
    assert at.session_state["messages"][2]["content"].startswith("error: unknown tool 'weather'")
    assert at.session_state["messages"][-1]["content"] == "Sorry."


def test_without_the_toggle_no_tools_are_offered(tool_app):
    at, model, _ = tool_app
    at.chat_input[0].set_value("What is 6*7?").run()
    assert [m["role"] for m in at.session_state["messages"]] == ["user", "assistant"]
    assert "<tools>" not in model.prompts[-1] and at.session_state["messages"][-1]["content"] == CALL
