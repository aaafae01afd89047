"""A Streamlit chat demo: pick a model, chat with streamed replies, tune temperature and top-p,
switch thinking on or off.

    minimind web --model sft --model reasoning        # opens http://127.0.0.1:8501
    streamlit run minimind/web.py                     # the same app, models from MINIMIND_WEB_MODELS

Streamlit is an optional extra (`pip install minimind[web]`). The reply is only ever shown as
text: nothing the model writes is executed (upstream's demo ran `eval` on it, §8.12).
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
OPTIONS_ENV = "MINIMIND_WEB_OPTIONS"  # JSON object: tokenizer, preset, lora, device, dtype


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

    @st.cache_resource(show_spinner="Loading the model…")
    def load(spec: str, options_json: str):
        options = json.loads(options_json)
        return load_chat_model(spec, options.get("tokenizer"), options.get("lora", ()), options.get("preset"),
                               options.get("device", "auto"), options.get("dtype", "auto"))

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
        if st.button("Clear conversation", key="clear"):
            st.session_state.messages = []

    model, tokenizer = load(spec, json.dumps(options, sort_keys=True))
    st.caption(f"{spec}: {model.num_parameters() / 1e6:.2f}M parameters, "
               f"context {model.config.max_position_embeddings} tokens")
    messages = st.session_state.setdefault("messages", [])
    for message in messages:
        with st.chat_message(message["role"]):
            if message.get("reasoning"):
                with st.expander("Thinking"):
                    st.text(message["reasoning"])
            st.markdown(message["content"])

    question = st.chat_input("Ask MiniMind something")
    if not question:
        return
    messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)

    context = model.config.max_position_embeddings
    history = [{"role": m["role"], "content": m["content"]} for m in messages]
    with st.chat_message("assistant"):
        try:
            history, max_new_tokens = plan_reply(history, tokenizer, context, max_new_tokens, thinking)
        except ValueError as error:
            st.error(str(error))
            messages.pop()
            return
        params = SamplingParams.for_tokenizer(tokenizer, temperature=temperature, top_p=top_p,
                                              max_new_tokens=max_new_tokens)
        reply = stream_reply(model, tokenizer, history, params, enable_thinking=thinking)
        reasoning_box = st.expander("Thinking", expanded=True).empty() if thinking else None

        def answer_pieces():
            for channel, text in reply:
                if channel == "content":
                    yield text
                elif reasoning_box is not None:
                    reasoning_box.text(reply.reasoning)

        st.write_stream(answer_pieces())
        st.caption(f"{reply.completion_tokens} tokens · {reply.tokens_per_second:.1f} tokens/s · "
                   f"finish: {reply.finish_reason}")
    messages.append({"role": "assistant", "content": reply.content, "reasoning": reply.reasoning})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind web", description="Start the Streamlit chat demo.")
    add_model_flags(parser, several=True)
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
               "device": args.device, "dtype": args.dtype}
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
