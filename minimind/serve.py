"""An OpenAI-compatible HTTP server for a MiniMind model (FastAPI + uvicorn).

    python -m minimind.serve --model sft                 # http://127.0.0.1:8998/v1
    curl http://127.0.0.1:8998/v1/chat/completions -H 'content-type: application/json' \
         -d '{"model": "minimind", "messages": [{"role": "user", "content": "Hi"}]}'

Endpoints: `POST /v1/chat/completions` (non-streaming with `usage`, or server-sent events with
OpenAI's chunk objects ending in `data: [DONE]`), `GET /v1/models`, `GET /v1/models/{id}`,
`GET /health`. Thinking models put their `<think>` text in `reasoning_content`; request it with
`"enable_thinking": true` (or `chat_template_kwargs: {"enable_thinking": true}`), cap it with
`"thinking_budget": N`. Also accepted beyond OpenAI's fields: `top_k`, `repetition_penalty`.
Tools as OpenAI defines them: `tools` (function signatures, written into the prompt by the chat
template), `tool_choice` ("auto", "none", "required" or a named function: the prompt then ends
inside that call), `parallel_tool_calls`; the model's `<tool_call>` blocks come back as
`tool_calls` with `finish_reason: "tool_calls"` (streamed: one delta naming the call, one with its
arguments), `tool` messages are its results. A call the model writes malformed (not JSON, an
unknown tool, no arguments) stays in `content` as the text it wrote.
A field this server cannot honour (`logprobs`, `functions`, `response_format` other than text,
non-zero `presence_penalty`/`frequency_penalty`, `logit_bias`, …) is a 400 naming it, never
silently ignored.

Unlike upstream MiniMind's server script it binds 127.0.0.1 unless told otherwise, answers
malformed requests with a 4xx OpenAI-style error object (`{"error": {"message", "type", "param",
"code"}}`) and keeps serving, and runs all generation on one worker thread: concurrent requests
wait their turn in a queue (first come, first served) and each gets its own complete answer. What
one client can ask of it is bounded (`ServerLimits`, README "Server limits and security
defaults"): the request body's size, the time its head and body take to arrive, the queue (a full
one answers 429 with Retry-After), `max_tokens`, the connections; a client that disconnects,
streaming or not, stops its generation or frees its place in the queue. Prompts are tokenized
off the event loop, after a length check that needs no tokenizer. `--api_key` requires
`Authorization: Bearer KEY`; requests whose Host header is not this machine are refused while
bound to the loopback address (a web page cannot reach the server through DNS rebinding).
"""
import argparse
import asyncio
import collections
import hmac
import ipaddress
import json
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from minimind.commandline import accept_both_spellings
from minimind.generate import SEED_RANGE, SamplingParams
from minimind.inference import add_model_flags, load_chat_model, stream_reply
from minimind.runtime import resolve_device
from minimind.tokenizer import tool_call_opening
from minimind.tools import ToolCall, ToolCallStream, ToolSchemaError, check_tool_schemas

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8998
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_STOP_STRINGS = 4  # as OpenAI
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ServerLimits:
    """What one client may ask of the server. The defaults suit a laptop: 64 streams at once
    are answered in turn, a request cannot hold memory or the worker beyond these bounds."""

    max_body_bytes: int = 1 << 20  # a request body over this is a 413 (a full context is ~130 kB of text)
    max_queue: int = 64  # requests waiting for the worker (the one generating not counted); more: 429
    max_tokens: int = 2048  # the most `max_tokens` a request may ask for (the context caps it too)
    read_timeout: float = 30.0  # seconds for a request's head and body to arrive; slower clients are cut off
    max_connections: int = 128  # open connections; more are answered 503 (uvicorn's limit_concurrency)

    def __post_init__(self):
        for name in ("max_body_bytes", "max_queue", "max_tokens", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not self.read_timeout > 0:
            raise ValueError(f"--read_timeout must be > 0 seconds, got {self.read_timeout}")


@dataclass
class _Job:
    """One request's work for the worker thread, and the queue its events come back through."""

    messages: list[dict]
    prompt_ids: list[int]
    params: SamplingParams
    enable_thinking: Optional[bool]
    stop: list[str]
    loop: asyncio.AbstractEventLoop
    tool_names: Optional[list[str]] = None  # the tools the reply may call (None: the reply is all text)
    reply_prefix: str = ""  # what the prompt wrote of the reply already (an opened tool call)
    parallel_tool_calls: bool = True  # False: at most one call per reply
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.cancelled.set()


class QueueFull(Exception):
    """The worker already has `max_queue` requests waiting."""


class GenerationWorker:
    """Owns the model: runs one job at a time on its own thread, in arrival order, with at most
    `max_queue` jobs waiting (a cancelled job leaves the queue at once)."""

    def __init__(self, model, tokenizer, max_queue: int):
        self.model, self.tokenizer, self.max_queue = model, tokenizer, max_queue
        self._waiting: collections.deque = collections.deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="minimind-generation", daemon=True)
        self._thread.start()

    def _drop_cancelled(self) -> None:
        self._waiting = collections.deque(job for job in self._waiting if not job.cancelled.is_set())

    @property
    def queued(self) -> int:
        with self._changed:
            self._drop_cancelled()
            return len(self._waiting)

    def submit(self, job: _Job) -> None:
        with self._changed:
            self._drop_cancelled()
            if len(self._waiting) >= self.max_queue:
                raise QueueFull
            self._waiting.append(job)
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()

    def _next_job(self) -> Optional[_Job]:
        with self._changed:
            while not self._stopping and not self._waiting:
                self._changed.wait()
            return None if self._stopping else self._waiting.popleft()

    def _run(self) -> None:
        while (job := self._next_job()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                reply = stream_reply(self.model, self.tokenizer, job.messages, job.params, job.enable_thinking,
                                     job.stop, prompt_ids=job.prompt_ids)
                for channel, text in reply:
                    if job.cancelled.is_set():  # the client left: stop within one token
                        reply.close()
                        break
                    job.emit(("delta", channel, text))
                job.emit(("done", reply.finish_reason, reply.prompt_tokens, reply.completion_tokens))
            except Exception as error:  # report it to this client; the worker goes on with the next job
                job.emit(("error", f"{type(error).__name__}: {error}"))


class APIError(Exception):
    """An error answered as OpenAI does: HTTP status + {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error", headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# Fields of OpenAI's request this server cannot honour, with the values that ask for nothing
# (what clients send by default): any other value is a 400 naming the field.
UNSUPPORTED_FIELDS = {
    "logprobs": (None, False), "top_logprobs": (None, 0), "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "functions": (None, []), "function_call": (None, "none"), "response_format": (None, {"type": "text"}),
    "audio": (None,), "modalities": (None, ["text"]), "prediction": (None,), "web_search_options": (None,),
}
TEMPLATE_KWARGS = ("enable_thinking", "open_thinking")


def _request_models():
    """The request schema (pydantic, imported with FastAPI so `import minimind` stays light)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class TextPart(BaseModel):
        type: Literal["text"]
        text: str

    class FunctionCall(BaseModel):
        name: str = Field(min_length=1)
        arguments: Union[str, dict[str, Any]]  # OpenAI sends the JSON text; an object is taken too

    class RequestToolCall(BaseModel):
        id: Optional[str] = None
        type: Literal["function"] = "function"
        function: FunctionCall

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: Literal["system", "developer", "user", "assistant", "tool"]
        content: Union[str, list[TextPart], None] = None
        tool_calls: Optional[list[RequestToolCall]] = None
        tool_call_id: Optional[str] = None
        reasoning_content: Optional[str] = None

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class ChatCompletionRequest(BaseModel):
        # Clients send informational fields this server has no use for (`user`, `metadata`): accept
        # them. Those that would change the answer and are not implemented: UNSUPPORTED_FIELDS.
        model_config = ConfigDict(extra="allow")
        model: str
        messages: list[Message] = Field(min_length=1)
        temperature: Optional[float] = Field(None, ge=0, le=2)
        top_p: Optional[float] = Field(None, gt=0, le=1)
        top_k: Optional[int] = Field(None, ge=0)
        repetition_penalty: Optional[float] = Field(None, gt=0, le=10)
        max_tokens: Optional[int] = Field(None, ge=1)
        max_completion_tokens: Optional[int] = Field(None, ge=1)
        n: int = Field(1, ge=1, le=1, description="only one choice per request")
        stream: bool = False
        stream_options: Optional[StreamOptions] = None
        stop: Union[str, list[str], None] = None
        seed: Optional[int] = Field(None, ge=SEED_RANGE[0], lt=SEED_RANGE[1])
        enable_thinking: Optional[bool] = None
        chat_template_kwargs: Optional[dict[str, Any]] = None
        thinking_budget: Optional[int] = Field(None, ge=0)
        tools: Optional[list[Any]] = None  # checked by minimind.tools.check_tool_schemas, naming the field
        tool_choice: Union[str, dict[str, Any], None] = None
        parallel_tool_calls: Optional[bool] = None

    return ChatCompletionRequest


def _message_text(message) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


def _template_message(message) -> dict:
    """A request message as the chat template takes it: its text, and an assistant's tool calls
    and reasoning."""
    converted = {"role": "system" if message.role == "developer" else message.role, "content": _message_text(message)}
    if message.tool_calls:
        converted["tool_calls"] = [{"id": call.id, "type": "function",
                                    "function": {"name": call.function.name, "arguments": call.function.arguments}}
                                   for call in message.tool_calls]
    if message.reasoning_content is not None:
        converted["reasoning_content"] = message.reasoning_content
    return converted


def _message_bytes(message: dict, index: int) -> int:
    """The UTF-8 size of what a message puts into the prompt (its text, its calls' JSON)."""
    size = _utf8_length(message["content"], f"messages.{index}.content")
    for number, call in enumerate(message.get("tool_calls", [])):
        arguments = call["function"]["arguments"]
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        size += _utf8_length(call["function"]["name"] + text, f"messages.{index}.tool_calls.{number}.function")
    return size + _utf8_length(message.get("reasoning_content") or "", f"messages.{index}.reasoning_content")


def _tool_choice(request) -> tuple[Optional[list[str]], bool, Optional[str]]:
    """(the names of the tools the reply may call, or None for no tools; whether the prompt opens a
    call; the tool it opens) from `tools` and `tool_choice`; APIError naming the bad field."""
    choice = request.tool_choice
    tools = request.tools or []
    try:
        check_tool_schemas(tools)
    except ToolSchemaError as error:
        raise APIError(400, str(error), param=error.param) from None
    names = [tool["function"]["name"] for tool in tools]
    if choice is None or choice == "auto":
        return (names or None), False, None
    if choice == "none":
        return None, False, None
    if not names:
        raise APIError(400, "tool_choice asks for a tool call, but the request offers no tools", param="tool_choice")
    if choice == "required":
        return names, True, None
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not (isinstance(choice, dict) and choice.get("type") == "function" and isinstance(name, str)):
        raise APIError(400, 'tool_choice must be "auto", "none", "required" or {"type": "function", '
                            f'"function": {{"name": …}}}}, got {choice!r}', param="tool_choice")
    if name not in names:
        raise APIError(400, f"tool_choice names {name!r}, which is not one of the tools ({', '.join(names)})",
                       param="tool_choice.function.name")
    return [name], True, name


class _ReplyShaper:
    """Turns a job's generated text into OpenAI message deltas: content, and, when tools are on
    offer, its tool calls (a delta naming each call, then one with its arguments)."""

    def __init__(self, job: _Job):
        self.job = job
        self.calls: list[ToolCall] = []
        self._parser = ToolCallStream(job.tool_names) if job.tool_names is not None else None
        self._pending_prefix = job.reply_prefix

    def feed(self, text: str) -> list[dict]:
        if self._parser is None:
            return [{"content": text}]
        text, self._pending_prefix = self._pending_prefix + text, ""
        return self._deltas(self._parser.feed(text))

    def flush(self) -> list[dict]:
        if self._parser is None:
            return []
        return self._deltas(self._parser.feed(self._pending_prefix) + self._parser.flush())

    def _deltas(self, events) -> list[dict]:
        deltas = []
        for kind, value in events:
            if kind == "call":
                if self.calls and not self.job.parallel_tool_calls:
                    continue  # parallel_tool_calls=false: the first call only
                index = len(self.calls)
                self.calls.append(value)
                deltas.append({"tool_calls": [{"index": index, "id": value.id, "type": "function",
                                               "function": {"name": value.name, "arguments": ""}}]})
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": value.arguments_json}}]})
            else:  # content, or the text of a malformed call, which stays the model's text
                deltas.append({"content": value if kind == "content" else value.text})
        return deltas

    def finish_reason(self, reason: str) -> str:
        return "tool_calls" if self.calls and reason == "stop" else reason


def _utf8_length(text: str, param: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as error:  # a lone surrogate ("\ud800") is valid JSON but no text
        raise APIError(400, f"{param} holds {text[error.start]!r}, a lone surrogate, which is not text",
                       param=param) from None


def _longest_token_bytes(tokenizer) -> int:
    """The most bytes one ordinary token stands for: a text of B bytes is at least B / this many
    tokens (byte-level BPE: each character of a vocabulary entry is one byte)."""
    added = set(tokenizer.backend.get_added_tokens_decoder())
    return max(len(token) for token, token_id in tokenizer.backend.get_vocab().items() if token_id not in added)


def _host_name(host_header: str) -> str:
    """'localhost:8998' → 'localhost', '[::1]:8998' → '::1'."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class _Guard:
    """ASGI middleware in front of the app: the Host check, the API key, and the body limit (the
    body is read here, at most `max_body_bytes`, and handed on whole)."""

    def __init__(self, app, max_body_bytes: int, api_key: Optional[str], allowed_hosts: Optional[Sequence[str]]):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.allowed_hosts = {host.lower() for host in allowed_hosts} if allowed_hosts is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if self.allowed_hosts is not None and _host_name(headers.get("host", "")).lower() not in self.allowed_hosts:
            return await self._refuse(send, APIError(400, f"the Host header {headers.get('host', '')!r} is not "
                                                          "this server's (see --allowed_host)", code="invalid_host"))
        if self.api_key is not None and scope["path"] != "/health":
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key):
                return await self._refuse(send, APIError(
                    401, "a valid API key is required: send Authorization: Bearer KEY", code="invalid_api_key",
                    headers={"www-authenticate": "Bearer"}))
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await self._refuse(send, self._too_large())
        chunks, size = [], 0
        if scope["method"] in ("POST", "PUT", "PATCH"):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    return await self._refuse(send, self._too_large())
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        body_sent = False

        async def replay():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: http.disconnect when the client leaves

        return await self.app(scope, replay, send)

    def _too_large(self) -> APIError:
        return APIError(413, f"the request body is larger than {self.max_body_bytes} bytes",
                        code="request_too_large")

    @staticmethod
    async def _refuse(send, error: APIError) -> None:
        body = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        headers += [(name.encode(), value.encode()) for name, value in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _client_gone(receive) -> None:
    """Returns when the client has disconnected (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(model, tokenizer, model_name: str = "minimind", default_max_tokens: int = 512,
               default_temperature: float = 0.7, default_top_p: float = 0.92,
               limits: ServerLimits = ServerLimits(), api_key: Optional[str] = None,
               allowed_hosts: Optional[Sequence[str]] = None):
    """The ASGI application serving `model` under the id `model_name`: FastAPI behind `_Guard`.

    api_key: required as `Authorization: Bearer KEY` on every route but /health (None: open).
    allowed_hosts: the names the Host header may carry (None: any). The FastAPI app itself is
    the result's `.app`; its worker is `.app.state.worker`.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    ChatCompletionRequest = _request_models()
    context = model.config.max_position_embeddings
    longest_token = _longest_token_bytes(tokenizer)
    created = int(time.time())
    worker = GenerationWorker(model, tokenizer, limits.max_queue)
    # no /docs, /redoc or /openapi.json: nothing to browse, and nothing public beyond the API
    app = FastAPI(title="MiniMind OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    app.router.on_shutdown.append(worker.stop)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError):
        first = error.errors()[0]
        # pydantic names the member of a Union it tried (`str`, `list[TextPart]`): not a field of the request
        location = [str(part) for part in first.get("loc", ())
                    if part != "body" and str(part) not in ("str", "int", "float", "bool") and "[" not in str(part)]
        if first.get("type") == "json_invalid":
            message, param = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}", None
        else:
            param = ".".join(location) or None
            message = f"{param}: {first['msg']}" if param else first["msg"]
        return JSONResponse(APIError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException):
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(APIError(error.status_code, str(error.detail), code=code).body(), status_code=error.status_code)

    def model_card() -> dict:
        return {"id": model_name, "object": "model", "created": created, "owned_by": "minimind"}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "queued": worker.queued}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str):
        if model_id != model_name:
            raise APIError(404, f"the model {model_id!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        return model_card()

    def refuse_unsupported(request) -> None:
        extra = request.model_extra or {}
        for name, neutral in UNSUPPORTED_FIELDS.items():
            if name in extra and not any(extra[name] == value and type(extra[name]) is type(value) for value in neutral):
                raise APIError(400, f"{name} is not supported by this server (got {extra[name]!r})", param=name,
                               code="unsupported_parameter")
        for name in ("presence_penalty", "frequency_penalty"):  # OpenAI's range, so a typo is not taken for 0
            value = extra.get(name)
            if isinstance(value, (int, float)) and not -2 <= value <= 2:
                raise APIError(400, f"{name} must be in [-2, 2], got {value}", param=name)

    def thinking_of(request) -> Optional[bool]:
        thinking = request.enable_thinking
        for key, value in (request.chat_template_kwargs or {}).items():
            param = f"chat_template_kwargs.{key}"
            if key not in TEMPLATE_KWARGS:
                raise APIError(400, f"{param} is not a template option of this model "
                                    f"(known: {', '.join(TEMPLATE_KWARGS)})", param=param)
            if not isinstance(value, bool):
                raise APIError(400, f"{param} must be true or false, got {value!r}", param=param)
            if thinking is None:
                thinking = value
        return thinking

    async def make_job(request) -> _Job:
        if request.model != model_name:
            raise APIError(404, f"the model {request.model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        refuse_unsupported(request)
        messages = [_template_message(m) for m in request.messages]
        thinking = thinking_of(request)
        tool_names, open_call, tool_name = _tool_choice(request)
        tools = request.tools if tool_names is not None else None
        if open_call and thinking:
            raise APIError(400, "a tool_choice that forces a call cannot be combined with enable_thinking: the call "
                                "comes after the think block", param="tool_choice")
        max_tokens = request.max_completion_tokens or request.max_tokens
        if max_tokens is not None and max_tokens >= context:
            raise APIError(400, f"max_tokens is {max_tokens}, but this model's context is only {context} tokens",
                           param="max_tokens")
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens} "
                                "per request", param="max_tokens")
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if len(stop) > MAX_STOP_STRINGS:
            raise APIError(400, f"stop holds {len(stop)} strings; at most {MAX_STOP_STRINGS} are allowed", param="stop")
        for index, text in enumerate(stop):
            _utf8_length(text, f"stop.{index}")
        # a text of B bytes is at least B / longest_token tokens: a prompt that long is refused untokenized
        content_bytes = sum(_message_bytes(m, i) for i, m in enumerate(messages))
        content_bytes += len(json.dumps(tools, ensure_ascii=False).encode()) if tools else 0
        if content_bytes / longest_token >= context:
            raise APIError(400, f"the messages are at least {content_bytes // longest_token} tokens long; "
                                f"this model's context is {context} tokens", param="messages",
                           code="context_length_exceeded")
        try:
            prompt_ids = await asyncio.to_thread(tokenizer.encode_chat_prompt, messages, thinking, tools=tools,
                                                 open_tool_call=open_call, tool_name=tool_name)
        except ValueError as error:  # what the template refuses: a tool call without a name, …
            raise APIError(400, str(error), param="messages") from None
        prompt_len = len(prompt_ids)
        if prompt_len >= context:
            raise APIError(400, f"the messages are {prompt_len} tokens long; this model's context is {context} tokens",
                           param="messages", code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(default_max_tokens, limits.max_tokens, context - prompt_len)
        elif prompt_len + max_tokens > context:
            raise APIError(400, f"this model's context is {context} tokens, but {prompt_len} (messages) + "
                           f"{max_tokens} (max_tokens) were requested", param="max_tokens",
                           code="context_length_exceeded")
        try:
            params = SamplingParams.for_tokenizer(
                tokenizer,
                temperature=default_temperature if request.temperature is None else request.temperature,
                top_p=default_top_p if request.top_p is None else request.top_p,
                top_k=request.top_k or 0,
                repetition_penalty=request.repetition_penalty or 1.0,
                max_new_tokens=max_tokens,
                thinking_budget=request.thinking_budget,
                seed=request.seed,
            )
        except ValueError as error:  # a combination the schema cannot see
            raise APIError(400, str(error)) from None
        return _Job(messages, prompt_ids, params, thinking, stop, asyncio.get_running_loop(), tool_names,
                    tool_call_opening(tool_name) if open_call else "", request.parallel_tool_calls is not False)

    def submit(job: _Job) -> None:
        try:
            worker.submit(job)
        except QueueFull:
            raise APIError(429, f"the server is busy: {limits.max_queue} requests are waiting; retry shortly",
                           code="rate_limit_exceeded", kind="requests",
                           headers={"retry-after": str(RETRY_AFTER_SECONDS)}) from None

    async def collect(job: _Job) -> tuple:
        content, reasoning = [], []
        while True:
            event = await job.events.get()
            if event[0] == "delta":
                (reasoning if event[1] == "reasoning" else content).append(event[2])
            elif event[0] == "error":
                raise APIError(500, event[1], kind="server_error")
            else:
                return "".join(content), "".join(reasoning), *event[1:]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest, http_request: Request):
        job = await make_job(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        submit(job)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(_stream_events(job, completion_id, now, model_name, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        # the answer, unless the client hangs up first: then its generation stops
        answer = asyncio.ensure_future(collect(job))
        gone = asyncio.ensure_future(_client_gone(http_request.receive))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            job.cancelled.set()
            gone.cancel()
        if not answer.done():
            answer.cancel()
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        content, reasoning, finish_reason, prompt_tokens, completion_tokens = answer.result()
        shaper = _ReplyShaper(job)
        deltas = shaper.feed(content) + shaper.flush()
        text = "".join(delta.get("content", "") for delta in deltas)
        message = {"role": "assistant", "content": text if text or not shaper.calls else None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if shaper.calls:
            message["tool_calls"] = [call.openai() for call in shaper.calls]
        finish_reason = shaper.finish_reason(finish_reason)
        return {
            "id": completion_id, "object": "chat.completion", "created": now, "model": model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    return _Guard(app, limits.max_body_bytes, api_key, allowed_hosts)


async def _stream_events(job: _Job, completion_id: str, created: int, model_name: str, include_usage: bool):
    """Server-sent events: a role delta, content/reasoning/tool-call deltas, a finish_reason chunk,
    optionally a usage chunk, then `data: [DONE]`."""

    def chunk(delta: dict, finish_reason=None, **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}
        if include_usage and "usage" not in body:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    shaper = _ReplyShaper(job)
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await job.events.get()
            if event[0] == "delta" and event[1] == "reasoning":
                yield chunk({"reasoning_content": event[2]})
            elif event[0] == "delta":
                for delta in shaper.feed(event[2]):
                    yield chunk(delta)
            elif event[0] == "error":
                error = APIError(500, event[1], kind="server_error").body()
                yield f"data: {json.dumps(error)}\n\n"
                yield "data: [DONE]\n\n"
                return
            else:
                _, finish_reason, prompt_tokens, completion_tokens = event
                for delta in shaper.flush():
                    yield chunk(delta)
                yield chunk({}, shaper.finish_reason(finish_reason))
                if include_usage:
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
                    body = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                            "model": model_name, "choices": [], "usage": usage}
                    yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
                return
    finally:
        job.cancelled.set()


def _timed_protocol(read_timeout: float):
    """uvicorn's HTTP/1.1 protocol with a deadline: a request's head and body must arrive within
    `read_timeout` seconds of the connection opening (or of the previous response), else the
    connection is closed. uvicorn has none, so a client sending a byte now and then (slowloris)
    held its connection for ever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        _deadline = None

        def _arm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(read_timeout, self._too_slow)

        def _too_slow(self) -> None:
            # IDLE: the head has not come (or not the next one); SEND_BODY: the body has not all come
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_deadline()

        def on_response_complete(self) -> None:
            self._arm_deadline()  # before: the next request's head may already be in and handled
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

    return TimedH11Protocol


def uvicorn_config(app, limits: ServerLimits = ServerLimits()):
    """The uvicorn configuration that enforces `limits` at the connection level."""
    import uvicorn

    return uvicorn.Config(app, http=_timed_protocol(limits.read_timeout), limit_concurrency=limits.max_connections,
                          log_level="warning", lifespan="on")


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (before anything announces the address); OSError naming both."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    except (socket.gaierror, OverflowError) as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({error})") from None
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerLimits()
    parser = argparse.ArgumentParser(prog="minimind serve", description="Serve a MiniMind model over an OpenAI-compatible API.")
    add_model_flags(parser, speed=True)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT)
    parser.add_argument("--model_name", default="minimind", help="the model id clients must send")
    parser.add_argument("--max_tokens", type=int, default=512, help="max_tokens when a request gives none")
    parser.add_argument("--temperature", type=float, default=0.7, help="temperature when a request gives none")
    parser.add_argument("--top_p", type=float, default=0.92, help="top_p when a request gives none")
    limits = parser.add_argument_group("limits and security")
    limits.add_argument("--api_key", default=None,
                        help="require Authorization: Bearer KEY on every route but /health (default: no key)")
    limits.add_argument("--allowed_host", action="append", default=None, metavar="NAME",
                        help="a name the Host header may carry (repeatable; default: 127.0.0.1, localhost and ::1 "
                             "when bound to the loopback address, any name otherwise)")
    limits.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes,
                        help=f"largest request body (default {defaults.max_body_bytes}; larger: 413)")
    limits.add_argument("--max_queue", type=int, default=defaults.max_queue,
                        help=f"requests waiting for the model at most (default {defaults.max_queue}; more: 429)")
    limits.add_argument("--max_tokens_limit", type=int, default=defaults.max_tokens,
                        help=f"the most max_tokens a request may ask for (default {defaults.max_tokens})")
    limits.add_argument("--read_timeout", type=float, default=defaults.read_timeout,
                        help=f"seconds a request's head and body may take to arrive (default {defaults.read_timeout:g})")
    limits.add_argument("--max_connections", type=int, default=defaults.max_connections,
                        help=f"open connections at most (default {defaults.max_connections}; more: 503)")
    return accept_both_spellings(parser)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import fastapi  # noqa: F401  (create_app imports it; fail before loading the model)
        import uvicorn
    except ImportError as error:
        missing = error.name or "FastAPI or uvicorn"
        print(f"minimind serve: {missing} is not installed; pip install 'minimind[serve]'", file=sys.stderr)
        return 2
    loopback = _is_loopback(args.host)
    allowed_hosts = args.allowed_host or (list(LOOPBACK_NAMES) if loopback else None)
    try:
        limits = ServerLimits(args.max_body_bytes, args.max_queue, args.max_tokens_limit, args.read_timeout,
                              args.max_connections)
        resolve_device(args.device)
        sock = listen(args.host, args.port)  # before the model loads: a taken port fails in a second
    except (ValueError, OSError) as error:
        print(f"minimind serve: {error}", file=sys.stderr)
        return 2
    try:
        model, tokenizer = load_chat_model(args.model, args.tokenizer, args.lora, args.preset, args.device, args.dtype,
                                           quantize=args.quantize, draft=args.draft, draft_tokens=args.draft_tokens)
    except (ValueError, OSError) as error:
        sock.close()
        print(f"minimind serve: {error}", file=sys.stderr)
        return 2
    app = create_app(model, tokenizer, args.model_name, args.max_tokens, args.temperature, args.top_p, limits,
                     args.api_key, allowed_hosts)
    if not loopback and args.api_key is None:
        print(f"minimind serve: warning: {args.host} is reachable from other machines and no --api_key is set",
              file=sys.stderr)
    print(f"serving {args.model} as {args.model_name!r} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn_config(app, limits)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
