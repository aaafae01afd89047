"""A Streamlit chat demo: pick a model, chat with streamed replies, tune temperature and top-p,
switch thinking on or off, offer tools (a calculator and a directory of the book's people).

    minimind web --model sft --model reasoning        # opens http://127.0.0.1:8501
    streamlit run minimind/web.py                     # the same app, models from MINIMIND_WEB_MODELS

Streamlit is an optional extra (`pip install minimind[web]`). The reply is only ever shown as
text: nothing the model writes is executed (upstream MiniMind's web demo passed model output to Python's `eval`). With
"Tools" on, the model's tool calls are shown and run by `minimind.tools` (the calculator parses
arithmetic, it evaluates no code), and each result is fed back for its next reply.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from minimind.commandline import accept_both_spellings
from minimind.inference import add_model_flags

MODELS_ENV = "MINIMIND_WEB_MODELS"  # JSON list of model specs (paths or zoo names) the app offers
OPTIONS_ENV = "MINIMIND_WEB_OPTIONS"  # JSON object: tokenizer, preset, lora, device, dtype, quantize, draft, …
MAX_TOOL_ROUNDS = 4  # replies in a row that may call tools before the turn ends
TEMPLATE_KEYS = ("role", "content", "tool_calls", "tool_call_id")  # what of a shown message the template reads


def _configured_models() -> list[str]:
    raw = os.environ.get(MODELS_ENV)
    models = json.loads(raw) if raw else ["sft"]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ValueError(f"{MODELS_ENV} must be a JSON list of model paths or zoo names, got {raw!r}")
    return models


def _configured_options() -> dict:
    raw = os.environ.get(OPTIONS_ENV)
    return json.loads(raw) if raw else {}


def app() -> None:
    """The Streamlit script: one run per user interaction, state in `st.session_state`."""
    import streamlit as st

    from minimind.generate import SamplingParams
    from minimind.inference import load_chat_model, plan_reply, stream_reply
    from minimind.tools import ParsedReply, ToolCallStream, assistant_message, collect, default_registry

    @st.cache_resource(show_spinner="Loading the model…")
    def load(spec: str, options_json: str):
        options = json.loads(options_json)
        speed = {key: options[key] for key in ("quantize", "draft", "draft_tokens") if options.get(key) is not None}
        return load_chat_model(spec, options.get("tokenizer"), options.get("lora", ()), options.get("preset"),
                               options.get("device", "auto"), options.get("dtype", "auto"), **speed)

    st.set_page_config(page_title="MiniMind chat", page_icon="💬")
    st.title("MiniMind chat")
    models, options = _configured_models(), _configured_options()
    with st.sidebar:
        spec = st.selectbox("Model", models, key="model")
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 1.5, 0.7, 0.05, key="temperature")
        top_p = st.slider("Top-p", 0.05, 1.0, 0.9, 0.05, key="top_p")
        max_new_tokens = st.slider("Max new tokens", 8, 1024, 256, 8, key="max_new_tokens")
        thinking = st.toggle("Thinking", value=False, key="thinking",
                             help="Open a <think> block so a reasoning model thinks before it answers")
        use_tools = st.toggle("Tools", value=False, key="tools",
                              help="Offer a calculator and a directory of the book's people; the model's "
                                   "calls are run and their results fed back")
        if st.button("Clear conversation", key="clear"):
            st.session_state.messages = []

    model, tokenizer = load(spec, json.dumps(options, sort_keys=True))
    st.caption(f"{spec}: {model.num_parameters() / 1e6:.2f}M parameters, "
               f"context {model.config.max_position_embeddings} tokens")
    messages = st.session_state.setdefault("messages", [])

    def show_calls(message: dict) -> None:
        for call in message.get("tool_calls", []):
            st.code(f"{call['function']['name']}({call['function']['arguments']})", language="text")

    for message in messages:
        if message["role"] == "tool":
            with st.chat_message("tool", avatar="🔧"):
                st.code(message["content"], language="text")
            continue
        with st.chat_message(message["role"]):
            if message.get("reasoning"):
                with st.expander("Thinking"):
                    st.text(message["reasoning"])
            if message["content"]:
                st.markdown(message["content"])
            show_calls(message)

    question = st.chat_input("Ask MiniMind something")
    if not question:
        return
    messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)

    context = model.config.max_position_embeddings
    registry = default_registry() if use_tools else None
    tools = registry.schemas() if registry else None
    for tool_round in range(MAX_TOOL_ROUNDS + 1):
        history = [{k: m[k] for k in TEMPLATE_KEYS if k in m} for m in messages]
        with st.chat_message("assistant"):
            try:
                history, reply_tokens = plan_reply(history, tokenizer, context, max_new_tokens, thinking, tools)
            except ValueError as error:
                st.error(str(error))
                if tool_round == 0:
                    messages.pop()
                return
            params = SamplingParams.for_tokenizer(tokenizer, temperature=temperature, top_p=top_p,
                                                  max_new_tokens=reply_tokens)
            reply = stream_reply(model, tokenizer, history, params, enable_thinking=thinking, tools=tools)
            reasoning_box = st.expander("Thinking", expanded=True).empty() if thinking else None
            calls = ToolCallStream(registry.names) if registry else None
            parsed = ParsedReply()

            def shown_text(events) -> list[str]:
                collect(events, parsed)
                return [value for kind, value in events if kind == "content"]

            def answer_pieces():
                for channel, text in reply:
                    if channel == "content":
                        yield from shown_text(calls.feed(text) if calls else [("content", text)])
                    elif reasoning_box is not None:
                        reasoning_box.text(reply.reasoning)
                if calls:
                    yield from shown_text(calls.flush())

            st.write_stream(answer_pieces())
            message = assistant_message(parsed) if registry else {"role": "assistant", "content": reply.content}
            show_calls(message)
            for bad in parsed.malformed:
                st.warning(f"malformed tool call ({bad.reason}): {bad.text}")
            st.caption(f"{reply.completion_tokens} tokens · {reply.tokens_per_second:.1f} tokens/s · "
                       f"finish: {reply.finish_reason}")
        messages.append({**message, "reasoning": reply.reasoning})
        if registry is None or reply.finish_reason != "stop" or not (parsed.calls or parsed.malformed):
            return
        if tool_round == MAX_TOOL_ROUNDS:
            st.info(f"The model is still calling tools after {MAX_TOOL_ROUNDS} rounds; the turn ends here.")
            return
        for result in registry.respond(parsed):
            messages.append(result)
            with st.chat_message("tool", avatar="🔧"):
                st.code(result["content"], language="text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind web", description="Start the Streamlit chat demo.")
    add_model_flags(parser, several=True, speed=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8501)
    return accept_both_spellings(parser)


def streamlit_command(args) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(Path(__file__).resolve()),
            "--server.address", args.host, "--server.port", str(args.port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import streamlit  # noqa: F401  (only to fail early with a clear message)
    except ImportError:
        print("minimind web: Streamlit is not installed; pip install 'minimind[web]'", file=sys.stderr)
        return 2
    options = {"tokenizer": args.tokenizer, "preset": args.preset, "lora": args.lora,
               "device": args.device, "dtype": args.dtype,
               "quantize": args.quantize, "draft": args.draft, "draft_tokens": args.draft_tokens}
    env = {**os.environ, MODELS_ENV: json.dumps(args.model or ["sft"]), OPTIONS_ENV: json.dumps(options)}
    print(f"MiniMind web demo on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    return subprocess.call(streamlit_command(args), env=env)


def _running_inside_streamlit() -> bool:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return False
    return get_script_run_ctx() is not None


if __name__ == "__main__":
    if _running_inside_streamlit():
        app()
    else:
        sys.exit(main())
