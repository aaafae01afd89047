"""Talk to a trained model: loading a checkpoint for chat, streamed replies split into reasoning
and answer, and the `minimind chat` command line (interactive, or one-shot with --prompt).

    python -m minimind.chat --model sft                       # a zoo artefact, interactive
    python -m minimind.chat --model out/sft --lora out/lora_identity --prompt "Who are you?"
    python -m minimind.chat --model MiniMind2-Small.pth --tokenizer path/to/minimind2_tokenizer

`load_chat_model` and `stream_reply` are shared with the server (`minimind.serve`) and the web
demo (`minimind.web`), so the three behave identically.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from minimind.generate import IncrementalDecoder, SamplingParams, stream_generate
from minimind.runtime import DTYPES, resolve_device, resolve_dtype
from minimind.tokenizer import ANSWER_END, ANSWER_START, THINK_END, THINK_START

from minimind.zoo import CHAT_MODELS as ZOO_MODELS  # noqa: E402  (the book's chat models; every zoo name resolves)


# ---------------------------------------------------------------------------------------------
# Loading.

def zoo_model_dir(name: str) -> Path:
    """The folder of the zoo artefact `name` (trained and cached on first use)."""
    from minimind import zoo

    if name not in zoo.RECIPES:
        raise FileNotFoundError(f"{name}: no such checkpoint, nor a zoo artefact (e.g. {', '.join(ZOO_MODELS)})")
    return zoo.path(name)


def load_chat_model(model: str | Path, tokenizer: str | Path | None = None, lora: Sequence[str | Path] = (),
                    preset: str | None = None, device: str = "auto", dtype: str = "auto"):
    """Load (model, tokenizer) ready for chat, in eval mode on `device` in `dtype`.

    model: a checkpoint folder (ours or a transformers Llama/MiniMind2 folder), an upstream
    `.pth` file, or the name of a zoo artefact (e.g. "sft"). preset: the config of a `.pth`
    file when its shapes are ambiguous. tokenizer: a folder or tokenizer.json; by default the
    one saved beside the model, else the book's tokenizer from the zoo. lora: adapter folders
    written by `minimind.lora.save_lora`, applied at load time; a single adapter is merged into
    the weights (no inference cost), several stay switchable with `set_active_adapter` (the last
    one active). device "auto" picks CUDA, MPS or the CPU; dtype "auto" is bf16 on GPUs that
    support it and fp32 on the CPU.
    """
    from minimind.checkpoint import load_model
    from minimind.config import get_config
    from minimind.lora import load_lora, merge_lora
    from minimind.tokenizer import MiniMindTokenizer

    run_device = resolve_device(device)  # before loading: a missing device fails in a second, not after minutes
    path = Path(model)
    if not path.exists():
        if path.name != str(model) or path.suffix:  # looks like a path, not an artefact name
            raise FileNotFoundError(f"{model}: no such checkpoint")
        path = zoo_model_dir(str(model))
    config = get_config(preset) if preset else None
    network = load_model(path, config=config)  # fp32 on the CPU first: adapters check the base's exact bytes
    for adapter in lora:
        load_lora(network, adapter)
    if len(lora) == 1:
        merge_lora(network)
    network = network.to(device=run_device, dtype=resolve_dtype(dtype, run_device)).eval()

    if tokenizer is not None:
        tok = MiniMindTokenizer.from_pretrained(tokenizer)
    elif path.is_dir() and (path / "tokenizer.json").exists():
        tok = MiniMindTokenizer.from_pretrained(path)
    else:
        from minimind import zoo

        tok = zoo.tokenizer()
    if tok.vocab_size > network.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only {network.config.vocab_size}: "
                         "pass the tokenizer the model was trained with (--tokenizer)")
    return network, tok


# ---------------------------------------------------------------------------------------------
# Streaming a reply.

def _holdback(buffer: str, tags: Sequence[str]) -> int:
    """Length of the longest suffix of `buffer` that could still grow into one of `tags`."""
    longest = 0
    for tag in tags:
        for k in range(min(len(tag) - 1, len(buffer)), longest, -1):
            if buffer.endswith(tag[:k]):
                longest = k
                break
    return longest


class ThinkingSplitter:
    """Routes streamed text to "reasoning" (inside `<think>…</think>`) or "content" (the answer),
    dropping the tags and the whitespace around each part, without ever emitting a half tag.

    The answer never shows the reasoning format's markup: `<answer>`, `</answer>` and a stray
    `</think>` (a model that closes its thought again after a thinking budget closed it) are
    dropped from the content, whitespace on either side of them counting once."""

    DROPPED_IN_CONTENT = (THINK_END, ANSWER_START, ANSWER_END)

    def __init__(self, thinking: bool, stop: Sequence[str] = ()):
        self.thinking = thinking
        self.stop = [s for s in stop if s]
        self.stopped = False
        self._buffer = ""
        self._at_start = True  # strip whitespace at the start of each part
        self._pending_space = ""  # trailing whitespace, released only if more text follows
        self._after_dropped_tag = False  # whitespace after a dropped tag merges with the pending one

    def _emit(self, text: str, out: list) -> None:
        if self._at_start or (self._after_dropped_tag and self._pending_space):
            text = text.lstrip()
            if not text:
                return
            self._at_start = False
        if text.strip():
            self._after_dropped_tag = False
        body = text.rstrip()
        if body:
            out.append(("reasoning" if self.thinking else "content", self._pending_space + body))
            self._pending_space = ""
        self._pending_space += text[len(body):]

    def _switch(self) -> None:
        self.thinking = not self.thinking
        self._at_start, self._pending_space, self._after_dropped_tag = True, "", False

    def feed(self, text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.stopped:
            return out
        self._buffer += text
        while True:
            tags = [THINK_END] if self.thinking else [THINK_START, *self.DROPPED_IN_CONTENT]
            found = [(i, tag) for tag in tags if (i := self._buffer.find(tag)) >= 0]
            tag_at, tag = min(found) if found else (-1, "")
            stops = [] if self.thinking else [(i, s) for s in self.stop if (i := self._buffer.find(s)) >= 0]
            stop_at = min(stops)[0] if stops else -1
            if stop_at >= 0 and (tag_at < 0 or stop_at < tag_at):
                self._emit(self._buffer[:stop_at], out)
                self._buffer, self.stopped = "", True
                return out
            if tag_at >= 0:
                self._emit(self._buffer[:tag_at], out)
                self._buffer = self._buffer[tag_at + len(tag):]
                if self.thinking or tag == THINK_START:
                    self._switch()
                else:
                    self._after_dropped_tag = True
                continue
            keep = _holdback(self._buffer, tags + ([] if self.thinking else self.stop))
            self._emit(self._buffer[:len(self._buffer) - keep], out)
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if not self.stopped:
            self._emit(self._buffer, out)
        self._buffer = ""
        return out


class ReplyStream:
    """One assistant reply, streamed as (channel, text) pairs, channel "reasoning" or "content".

    After iteration: `content`, `reasoning` (full texts), `finish_reason` ("stop" or "length"),
    `prompt_tokens`, `completion_tokens`, `seconds`, `tokens_per_second`.
    """

    def __init__(self, model, tokenizer, messages: list[dict], params: SamplingParams,
                 enable_thinking: bool | None = None, stop: Sequence[str] = (),
                 prompt_ids: Sequence[int] | None = None):
        prompt = prompt_ids if prompt_ids is not None else tokenizer.encode_chat_prompt(messages, enable_thinking=enable_thinking)
        self._tokens = stream_generate(model, prompt, params)
        self._decoder = IncrementalDecoder(tokenizer)
        self._splitter = ThinkingSplitter(thinking=bool(enable_thinking), stop=stop)
        self.prompt_tokens = len(prompt)
        self.content = ""
        self.reasoning = ""
        self.finish_reason: str | None = None
        self._started = time.perf_counter()
        self.seconds = 0.0

    @property
    def completion_tokens(self) -> int:
        return self._tokens.completion_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def _record(self, events):
        for channel, text in events:
            if channel == "content":
                self.content += text
            else:
                self.reasoning += text
            yield channel, text

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for token in self._tokens:
            yield from self._record(self._splitter.feed(self._decoder.push(token)))
            if self._splitter.stopped:
                self._tokens.close()
                self.finish_reason = "stop"
                break
        yield from self._record(self._splitter.feed(self._decoder.flush()))
        yield from self._record(self._splitter.flush())
        self.finish_reason = self.finish_reason or self._tokens.finish_reason
        self.seconds = time.perf_counter() - self._started

    def close(self) -> None:
        """Stop generating (the client left, Ctrl-C); finish_reason becomes "cancelled"."""
        self._tokens.close()
        if self.finish_reason is None:
            self.finish_reason = "cancelled"
            self.seconds = time.perf_counter() - self._started


def stream_reply(model, tokenizer, messages: list[dict], params: SamplingParams | None = None,
                 enable_thinking: bool | None = None, stop: Sequence[str] = (),
                 prompt_ids: Sequence[int] | None = None) -> ReplyStream:
    """Stream the assistant's reply to `messages` ({"role", "content"} dicts, chat template applied).

    enable_thinking: True opens a `<think>` block (the text until `</think>` comes out as
    "reasoning"), False renders an empty one so the model answers directly, None leaves the
    template as trained. stop: strings that end the answer (not included), as OpenAI's `stop`.
    prompt_ids: `tokenizer.encode_chat_prompt(messages, enable_thinking)` when the caller has it
    already (the server encodes each prompt once, before it queues the request).
    """
    return ReplyStream(model, tokenizer, messages, params or SamplingParams(), enable_thinking, stop, prompt_ids)


def fit_history(messages: list[dict], tokenizer, context: int, max_new_tokens: int,
                enable_thinking: bool | None = None) -> list[dict]:
    """Drop the oldest turns (never the system prompt or the last message) until the prompt
    plus `max_new_tokens` fits in `context` tokens; ValueError if even the last message alone does not."""
    return _fit_history(messages, tokenizer, context, max_new_tokens, enable_thinking,
                        f"with max_new_tokens={max_new_tokens}")


def _fit_history(messages, tokenizer, context, max_new_tokens, enable_thinking, reply_room: str) -> list[dict]:
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system):]
    while True:
        prompt_len = len(tokenizer.encode_chat_prompt(system + rest, enable_thinking=enable_thinking))
        if prompt_len + max_new_tokens <= context:
            return system + rest
        if len(rest) <= 1:
            raise ValueError(f"the message is {prompt_len} tokens long; {reply_room} it "
                             f"does not fit the model's context of {context} tokens")
        rest = rest[1:]
        while rest and rest[0]["role"] != "user" and len(rest) > 1:
            rest = rest[1:]


def plan_reply(messages: list[dict], tokenizer, context: int, max_new_tokens: int,
               enable_thinking: bool | None = None) -> tuple[list[dict], int]:
    """Fit a conversation into the context for interactive use: drop the oldest turns until at
    least min(max_new_tokens, context // 2) tokens are left for the reply, then cap the reply at
    what is left. Returns (messages, max_new_tokens); ValueError if the last message alone is too long."""
    reserve = max(1, min(max_new_tokens, context // 2))
    room = (f"with max_new_tokens={max_new_tokens}" if reserve == max_new_tokens else
            f"leaving at least {reserve} tokens for the reply (max_new_tokens={max_new_tokens}, at most half the context)")
    fitted = _fit_history(messages, tokenizer, context, reserve, enable_thinking, room)
    prompt_len = len(tokenizer.encode_chat_prompt(fitted, enable_thinking=enable_thinking))
    return fitted, min(max_new_tokens, context - prompt_len)


# ---------------------------------------------------------------------------------------------
# The command line.

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
    parser.add_argument("--model", default="sft",
                        help=f"checkpoint folder, .pth file, or zoo name ({', '.join(ZOO_MODELS)}); default sft")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or tokenizer.json (default: beside the model)")
    parser.add_argument("--preset", default=None, help="config preset for a .pth checkpoint (e.g. minimind2-small)")
    parser.add_argument("--lora", action="append", default=[], help="LoRA adapter folder (repeatable)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--prompt", action="append", default=None,
                        help="non-interactive: send this user message, print the reply, exit (repeat for more turns)")
    parser.add_argument("--system", default=None, help="system prompt (default: the template's)")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--think", action=argparse.BooleanOptionalAction, default=None,
                        help="open a <think> block (--think), skip it (--no-think), or leave the template as trained")
    parser.add_argument("--thinking-budget", type=int, default=None, help="most tokens inside <think>…</think>")
    parser.add_argument("--history", type=_history_length, default=None, metavar="N",
                        help="keep only the last N earlier messages (user and assistant) besides the new prompt; "
                             "0 = no history (default: as many as fit)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    return parser


def _print_reply(reply: ReplyStream, out, show_reasoning_header: bool) -> None:
    channel_now = None
    for channel, text in reply:
        if channel != channel_now:
            if channel == "reasoning" and show_reasoning_header:
                out.write("[thinking] ")
            elif channel == "content" and channel_now == "reasoning":
                out.write("\n[answer] ")
            channel_now = channel
        out.write(text)
        out.flush()
    out.write("\n")
    out.flush()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, tokenizer = load_chat_model(args.model, args.tokenizer, args.lora, args.preset, args.device, args.dtype)
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
        try:
            history, max_new_tokens = plan_reply(history, tokenizer, context, params.max_new_tokens, thinking)
        except ValueError as error:
            print(f"minimind chat: {error}", file=sys.stderr)
            history.pop()
            if interactive:
                continue
            return 2
        if interactive:
            sys.stdout.write("minimind> ")
        reply = stream_reply(model, tokenizer, history, params.replace(max_new_tokens=max_new_tokens),
                             enable_thinking=thinking)
        try:
            _print_reply(reply, sys.stdout, show_reasoning_header=True)
        except KeyboardInterrupt:
            reply.close()
            print("\n(interrupted)", file=sys.stderr)
        history.append({"role": "assistant", "content": reply.content})
        print(f"[{reply.completion_tokens} tokens, {reply.tokens_per_second:.1f} tokens/s, "
              f"finish: {reply.finish_reason}]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
