"""`minimind chat` (= `python -m minimind.chat`): talk to a trained model in the terminal,
interactively, or one-shot with --prompt. Loading and streaming are `minimind.inference`'s.

    python -m minimind.chat --model sft                       # a zoo artefact, interactive
    python -m minimind.chat --model out/sft --lora out/lora_identity --prompt "Who are you?"
    python -m minimind.chat --model MiniMind2-Small.pth --tokenizer path/to/minimind2_tokenizer
    python -m minimind.chat --model tools --tools --prompt "What is 17*23?"   # calculator, lookup_person

With --tools the model is offered the book's tools (`minimind.tools.default_registry`); each call
it makes is shown, run, and its result fed back as a `tool` message for the next reply.
"""
from __future__ import annotations

import argparse
import sys

from minimind.commandline import BooleanFlag, accept_both_spellings
from minimind.generate import SamplingParams
from minimind.inference import ReplyStream, add_model_flags, load_chat_model, plan_reply, stream_reply
from minimind.tools import ParsedReply, ToolCallStream, assistant_message, collect, default_registry


HELP = """commands: /reset (forget the conversation)  /think on|off  /exit  (Ctrl-D also exits)"""


def _history_length(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of messages, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no history) or more, got {value}")
    return value


def trim_history(messages: list[dict], keep: int) -> list[dict]:
    """The system message (if first), the last `keep` earlier messages, and the last message (the new prompt)."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    return system + (rest[:-1][-keep:] if keep else []) + rest[-1:]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind chat", description="Chat with a MiniMind checkpoint.")
    add_model_flags(parser, speed=True)
    parser.add_argument("--prompt", action="append", default=None,
                        help="non-interactive: send this user message, print the reply, exit (repeat for more turns)")
    parser.add_argument("--system", default=None, help="system prompt (default: the template's)")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=0.9)
    parser.add_argument("--top_k", type=int, default=0, help="0 = off")
    parser.add_argument("--repetition_penalty", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--think", action=BooleanFlag, default=None,
                        help="open a <think> block (--think), skip it (--no_think), or leave the template as trained")
    parser.add_argument("--thinking_budget", type=int, default=None, help="most tokens inside <think>…</think>")
    parser.add_argument("--history", type=_history_length, default=None, metavar="N",
                        help="keep only the last N earlier messages (user and assistant) besides the new prompt; "
                             "0 = no history (default: as many as fit)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    parser.add_argument("--tools", action=BooleanFlag, default=False,
                        help="offer the calculator and lookup_person tools and run the calls the model makes")
    parser.add_argument("--max_tool_rounds", type=int, default=4,
                        help="replies in a row that may call tools before the turn ends (default 4)")
    return accept_both_spellings(parser)


def _print_reply(reply: ReplyStream, out, show_reasoning_header: bool, tools=None) -> ParsedReply:
    """Print the reply as it streams; with `tools` (the names on offer) its tool calls are shown
    as calls, not as the text that writes them. Returns the reply split into content and calls."""
    channel_now = None
    calls = ToolCallStream(tools) if tools is not None else None
    parsed = ParsedReply()

    def show(events) -> None:
        for kind, value in events:
            if kind == "content":
                out.write(value)
            elif kind == "call":
                out.write(f"\n[tool call] {value.name}({value.arguments_json})")
            else:
                out.write(f"\n[malformed tool call: {value.reason}] {value.text}")
        collect(events, parsed)
        out.flush()

    for channel, text in reply:
        if channel != channel_now:
            if channel == "reasoning" and show_reasoning_header:
                out.write("[thinking] ")
            elif channel == "content" and channel_now == "reasoning":
                out.write("\n[answer] ")
            channel_now = channel
        if channel == "content":
            show(calls.feed(text) if calls is not None else [("content", text)])
        else:
            out.write(text)
            out.flush()
    if calls is not None:
        show(calls.flush())
    out.write("\n")
    out.flush()
    return parsed


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, tokenizer = load_chat_model(args.model, args.tokenizer, args.lora, args.preset, args.device, args.dtype,
                                           quantize=args.quantize, draft=args.draft, draft_tokens=args.draft_tokens)
        params = SamplingParams.for_tokenizer(
            tokenizer, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
            thinking_budget=args.thinking_budget, seed=args.seed)
    except (ValueError, OSError) as error:
        print(f"minimind chat: {error}", file=sys.stderr)
        return 2
    context = model.config.max_position_embeddings
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    print(f"model {args.model} ({model.num_parameters() / 1e6:.2f}M parameters) on {device} in "
          f"{str(dtype).removeprefix('torch.')}", file=sys.stderr)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    thinking = args.think
    registry = default_registry() if args.tools else None
    tools = registry.schemas() if registry else None
    interactive = args.prompt is None
    prompts = iter(args.prompt or [])
    if interactive:
        print(HELP, file=sys.stderr)
    while True:
        if interactive:
            try:
                user = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                print(file=sys.stderr)
                return 0
            if not user:
                continue
            if user in ("/exit", "/quit"):
                return 0
            if user == "/reset":
                history = history[:1] if history and history[0]["role"] == "system" else []
                print("(conversation cleared)", file=sys.stderr)
                continue
            if user.startswith("/think"):
                thinking = user.split()[-1] == "on"
                print(f"(thinking {'on' if thinking else 'off'})", file=sys.stderr)
                continue
            if user.startswith("/"):
                print(HELP, file=sys.stderr)
                continue
        else:
            user = next(prompts, None)
            if user is None:
                return 0
        history.append({"role": "user", "content": user})
        if args.history is not None:
            history = trim_history(history, args.history)
        for tool_round in range(args.max_tool_rounds + 1):
            try:
                history, max_new_tokens = plan_reply(history, tokenizer, context, params.max_new_tokens, thinking,
                                                     tools)
            except ValueError as error:
                print(f"minimind chat: {error}", file=sys.stderr)
                if tool_round == 0:
                    history.pop()
                if interactive:
                    break
                return 2
            if interactive and tool_round == 0:
                sys.stdout.write("minimind> ")
            reply = stream_reply(model, tokenizer, history, params.replace(max_new_tokens=max_new_tokens),
                                 enable_thinking=thinking, tools=tools)
            try:
                parsed = _print_reply(reply, sys.stdout, show_reasoning_header=True,
                                      tools=registry.names if registry else None)
            except KeyboardInterrupt:
                reply.close()
                print("\n(interrupted)", file=sys.stderr)
                parsed = ParsedReply(reply.content)
            history.append(assistant_message(parsed) if registry else {"role": "assistant", "content": reply.content})
            drafting = getattr(model, "last_stats", None)  # a --draft model: how much the draft saved
            speculation = (f"{drafting.acceptance_rate:.0%} of drafts accepted, "
                           f"{drafting.tokens_per_target_forward:.2f} tokens per forward, "
                           if drafting is not None and drafting.rounds else "")
            print(f"[{reply.completion_tokens} tokens, {reply.tokens_per_second:.1f} tokens/s, {speculation}"
                  f"finish: {reply.finish_reason}]", file=sys.stderr)
            if registry is None or reply.finish_reason != "stop" or not (parsed.calls or parsed.malformed):
                break
            if tool_round == args.max_tool_rounds:
                print(f"(the model is still calling tools after {args.max_tool_rounds} rounds; "
                      "the turn ends here)", file=sys.stderr)
                break
            for result in registry.respond(parsed):
                sys.stdout.write(f"[tool result] {result['content']}\n")
                history.append(result)


if __name__ == "__main__":
    sys.exit(main())
