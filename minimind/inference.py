"""Talking to a trained model, shared by every front end (`minimind chat`, `serve`, `web`, `eval`,
`export`): loading a checkpoint or zoo artefact for inference, the flags that say which and how,
and streaming a reply split into reasoning and answer.

    model, tokenizer = load_chat_model("sft")                 # a zoo artefact, a folder or a .pth
    for channel, text in stream_reply(model, tokenizer, [{"role": "user", "content": "Hi"}]): ...

The front ends are thin layers over this module, so the five behave identically.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Iterator, Sequence

from minimind.generate import IncrementalDecoder, SamplingParams, stream_generate
from minimind.quantize import QUANTIZE_CHOICES
from minimind.runtime import DTYPES, resolve_device, resolve_dtype
from minimind.tokenizer import ANSWER_END, ANSWER_START, THINK_END, THINK_START
from minimind.zoo import CHAT_MODELS


# ---------------------------------------------------------------------------------------------
# Which model, and how: the flags every front end shares.

def add_model_flags(parser: argparse.ArgumentParser, *, several: bool = False, lora: bool = True,
                    device: bool = True, dtype: str = "auto", speed: bool = False) -> argparse.ArgumentParser:
    """Declare the flags that choose the model and how it runs: --model (one, or `several` to
    offer), --tokenizer, --preset, --lora (unless `lora=False`), --device and --dtype (default
    `dtype`; unless `device=False`), and with `speed` --quantize, --draft and --draft_tokens.
    `load_chat_model(args.model, args.tokenizer, args.lora, args.preset, args.device, args.dtype,
    quantize=args.quantize, draft=args.draft, draft_tokens=args.draft_tokens)` takes what they parse to."""
    what = f"a checkpoint folder, .pth file, transformers folder or zoo name ({', '.join(CHAT_MODELS)})"
    if several:
        parser.add_argument("--model", action="append", default=None,
                            help=f"a model to offer (repeatable): {what}; default sft")
    else:
        parser.add_argument("--model", default="sft", help=f"{what}; default sft")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder or tokenizer.json (default: beside the model, else the book's)")
    parser.add_argument("--preset", default=None, help="config preset for a .pth checkpoint (e.g. minimind2-small)")
    if lora:
        parser.add_argument("--lora", action="append", default=[],
                            help="LoRA adapter folder (repeatable; a single one is merged into the weights)")
    if device:
        parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:1, mps")
        parser.add_argument("--dtype", default=dtype, choices=["auto", *DTYPES],
                            help=f"the weights' dtype (default {dtype}; auto: bf16 on a GPU, fp16 on MPS, fp32 on the CPU)")
    if speed:
        parser.add_argument("--quantize", default="none", choices=list(QUANTIZE_CHOICES),
                            help="int8: weight-only int8 for every decoder matrix (minimind.quantize); default none")
        parser.add_argument("--draft", default=None,
                            help="a smaller model of the same vocabulary that proposes tokens for the model to "
                                 "verify (speculative decoding, one prompt at a time; same output distribution)")
        parser.add_argument("--draft_tokens", type=int, default=4,
                            help="tokens the draft proposes per verification step (default 4)")
    return parser


# ---------------------------------------------------------------------------------------------
# Loading.

def model_path(model: str | Path) -> Path:
    """`model` if it is a path that exists, else the folder of the zoo artefact of that name
    (trained and cached on first use); FileNotFoundError when it is neither."""
    path = Path(model)
    if path.exists():
        return path
    if path.name != str(model) or path.suffix:  # looks like a path, not an artefact name
        raise FileNotFoundError(f"{model}: no such checkpoint")
    from minimind import zoo

    if str(model) not in zoo.RECIPES:
        raise FileNotFoundError(f"{model}: no such checkpoint, nor a zoo artefact (e.g. {', '.join(CHAT_MODELS)})")
    recipe = zoo.RECIPES[str(model)]
    if recipe.kind == "adapter":
        raise FileNotFoundError(f"{model}: the zoo artefact is a LoRA adapter; pass --model "
                                f"{recipe.inputs['init_from']} --lora {zoo.path(str(model))}")
    if recipe.kind != "model":
        raise FileNotFoundError(f"{model}: the zoo artefact is a {recipe.kind}, not a model")
    return zoo.path(str(model))


def load_chat_model(model: str | Path, tokenizer: str | Path | None = None, lora: Sequence[str | Path] = (),
                    preset: str | None = None, device: str = "auto", dtype: str = "auto", *,
                    quantize: str = "none", draft: str | Path | None = None, draft_tokens: int = 4):
    """Load (model, tokenizer) ready for chat, in eval mode on `device` in `dtype`.

    model: a checkpoint folder (ours or a transformers Llama/MiniMind2 folder), an upstream
    `.pth` file, or the name of a zoo artefact (e.g. "sft"). preset: the config of a `.pth`
    file when its shapes are ambiguous. tokenizer: a folder or tokenizer.json; by default the
    one saved beside the model, else the book's tokenizer from the zoo. lora: adapter folders
    written by `minimind.lora.save_lora`, applied at load time; a single adapter is merged into
    the weights (no inference cost), several stay switchable with `set_active_adapter` (the last
    one active). device "auto" picks CUDA, MPS or the CPU; dtype "auto" is bf16 on GPUs that
    support it and fp32 on the CPU. quantize "int8": weight-only int8 decoder matrices
    (`minimind.quantize.quantize_int8`, the draft's too). draft: a model (same forms as `model`)
    of the same vocabulary; the returned model is then a `minimind.speculative.SpeculativeModel`
    whose single-prompt streams (chat, serve) decode speculatively with `draft_tokens` proposals.
    """
    from minimind.checkpoint import load_model
    from minimind.config import get_config
    from minimind.lora import load_lora, merge_lora
    from minimind.tokenizer import MiniMindTokenizer

    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    if draft is not None and (not isinstance(draft_tokens, int) or draft_tokens < 1):
        raise ValueError(f"draft_tokens must be an integer >= 1, got {draft_tokens!r}")
    run_device = resolve_device(device)  # before loading: a missing device fails in a second, not after minutes
    path = model_path(model)
    config = get_config(preset) if preset else None
    network = load_model(path, config=config)  # fp32 on the CPU first: adapters check the base's exact bytes
    for adapter in lora:
        load_lora(network, adapter)
    if len(lora) == 1:
        merge_lora(network)
    network = network.to(device=run_device, dtype=resolve_dtype(dtype, run_device)).eval()
    if quantize == "int8":
        from minimind.quantize import quantize_int8

        quantize_int8(network)

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
    if draft is not None:
        from minimind.speculative import SpeculativeModel

        draft_path = model_path(draft)
        if draft_path.is_dir() and (draft_path / "tokenizer.json").exists():
            draft_vocab = MiniMindTokenizer.from_pretrained(draft_path).backend.get_vocab(with_added_tokens=True)
            if draft_vocab != tok.backend.get_vocab(with_added_tokens=True):
                raise ValueError(f"the draft {draft} was trained with another tokenizer than the model's: "
                                 "a draft must share the model's vocabulary token for token")
        draft_network = load_model(draft_path).to(device=run_device, dtype=resolve_dtype(dtype, run_device))
        if quantize == "int8":
            from minimind.quantize import quantize_int8

            quantize_int8(draft_network)
        network = SpeculativeModel(network, draft_network.eval(), draft_tokens)
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
                 prompt_ids: Sequence[int] | None = None, tools: Sequence[dict] | None = None):
        prompt = prompt_ids if prompt_ids is not None else \
            tokenizer.encode_chat_prompt(messages, enable_thinking=enable_thinking, tools=tools)
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
                 prompt_ids: Sequence[int] | None = None, tools: Sequence[dict] | None = None) -> ReplyStream:
    """Stream the assistant's reply to `messages` ({"role", "content"} dicts, chat template applied).

    enable_thinking: True opens a `<think>` block (the text until `</think>` comes out as
    "reasoning"), False renders an empty one so the model answers directly, None leaves the
    template as trained. stop: strings that end the answer (not included), as OpenAI's `stop`.
    prompt_ids: `tokenizer.encode_chat_prompt(messages, enable_thinking)` when the caller has it
    already (the server encodes each prompt once, before it queues the request). tools: the
    signatures of the tools the model may call (`minimind.tools`); its calls arrive as content.
    """
    return ReplyStream(model, tokenizer, messages, params or SamplingParams(), enable_thinking, stop, prompt_ids,
                       tools)


def fit_history(messages: list[dict], tokenizer, context: int, max_new_tokens: int,
                enable_thinking: bool | None = None, tools: Sequence[dict] | None = None) -> list[dict]:
    """Drop the oldest turns (never the system prompt or the last message) until the prompt
    plus `max_new_tokens` fits in `context` tokens; ValueError if even the last message alone does not."""
    return _fit_history(messages, tokenizer, context, max_new_tokens, enable_thinking,
                        f"with max_new_tokens={max_new_tokens}", tools)


def _fit_history(messages, tokenizer, context, max_new_tokens, enable_thinking, reply_room: str,
                 tools=None) -> list[dict]:
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system):]
    while True:
        prompt_len = len(tokenizer.encode_chat_prompt(system + rest, enable_thinking=enable_thinking, tools=tools))
        if prompt_len + max_new_tokens <= context:
            return system + rest
        if len(rest) <= 1:
            raise ValueError(f"the message is {prompt_len} tokens long; {reply_room} it "
                             f"does not fit the model's context of {context} tokens")
        rest = rest[1:]
        while rest and rest[0]["role"] != "user" and len(rest) > 1:
            rest = rest[1:]


def plan_reply(messages: list[dict], tokenizer, context: int, max_new_tokens: int,
               enable_thinking: bool | None = None, tools: Sequence[dict] | None = None) -> tuple[list[dict], int]:
    """Fit a conversation into the context for interactive use: drop the oldest turns until at
    least min(max_new_tokens, context // 2) tokens are left for the reply, then cap the reply at
    what is left. Returns (messages, max_new_tokens); ValueError if the last message alone is too long."""
    reserve = max(1, min(max_new_tokens, context // 2))
    room = (f"with max_new_tokens={max_new_tokens}" if reserve == max_new_tokens else
            f"leaving at least {reserve} tokens for the reply (max_new_tokens={max_new_tokens}, at most half the context)")
    fitted = _fit_history(messages, tokenizer, context, reserve, enable_thinking, room, tools)
    prompt_len = len(tokenizer.encode_chat_prompt(fitted, enable_thinking=enable_thinking, tools=tools))
    return fitted, min(max_new_tokens, context - prompt_len)
