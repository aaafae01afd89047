"""An OpenAI-compatible HTTP server for a MiniMind model (FastAPI + uvicorn).

    python -m minimind.serve --model sft                 # http://127.0.0.1:8998/v1
    curl http://127.0.0.1:8998/v1/chat/completions -H 'content-type: application/json' \
         -d '{"model": "minimind", "messages": [{"role": "user", "content": "Hi"}]}'

Endpoints: `POST /v1/chat/completions` (non-streaming with `usage`, or server-sent events with
OpenAI's chunk objects ending in `data: [DONE]`), `GET /v1/models`, `GET /v1/models/{id}`,
`GET /health`. Thinking models put their `<think>` text in `reasoning_content`; request it with
`"enable_thinking": true` (or `chat_template_kwargs: {"enable_thinking": true}`), cap it with
`"thinking_budget": N`. Also accepted beyond OpenAI's fields: `top_k`, `repetition_penalty`.

Unlike upstream's script (UPSTREAM_SPEC §8.11) it binds 127.0.0.1 unless told otherwise, answers
malformed requests with a 4xx OpenAI-style error object (`{"error": {"message", "type", "param",
"code"}}`) and keeps serving, and runs all generation on one worker thread: concurrent requests
wait their turn in a queue (first come, first served) and each gets its own complete answer; a
client that disconnects frees its place.
"""
import argparse
import asyncio
import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from minimind.chat import ZOO_MODELS, load_chat_model, stream_reply
from minimind.generate import DTYPES, SamplingParams

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8998


@dataclass
class _Job:
    """One request's work for the worker thread, and the queue its events come back through."""

    messages: list[dict]
    params: SamplingParams
    enable_thinking: Optional[bool]
    stop: list[str]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down)
            self.cancelled.set()


class GenerationWorker:
    """Owns the model: runs one job at a time on its own thread, in arrival order."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="minimind-generation", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            try:
                reply = stream_reply(self.model, self.tokenizer, job.messages, job.params, job.enable_thinking, job.stop)
                for channel, text in reply:
                    if job.cancelled.is_set():
                        reply.close()
                        break
                    job.emit(("delta", channel, text))
                job.emit(("done", reply.finish_reason, reply.prompt_tokens, reply.completion_tokens))
            except Exception as error:  # report it to this client; the worker goes on with the next job
                job.emit(("error", f"{type(error).__name__}: {error}"))


class APIError(Exception):
    """An error answered as OpenAI does: HTTP status + {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _request_models():
    """The request schema (pydantic, imported with FastAPI so `import minimind` stays light)."""
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class TextPart(BaseModel):
        type: Literal["text"]
        text: str

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: Literal["system", "developer", "user", "assistant"]
        content: Union[str, list[TextPart], None] = None

    class StreamOptions(BaseModel):
        include_usage: bool = False

    class ChatCompletionRequest(BaseModel):
        # Clients send fields this server does not use (e.g. `user`, `presence_penalty`): accept them.
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
        seed: Optional[int] = None
        enable_thinking: Optional[bool] = None
        chat_template_kwargs: Optional[dict[str, Any]] = None
        thinking_budget: Optional[int] = Field(None, ge=0)

    return ChatCompletionRequest


def _message_text(message) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text for part in message.content)


def create_app(model, tokenizer, model_name: str = "minimind", default_max_tokens: int = 512,
               default_temperature: float = 0.7, default_top_p: float = 0.92):
    """The FastAPI application serving `model` under the id `model_name`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    ChatCompletionRequest = _request_models()
    context = model.config.max_position_embeddings
    created = int(time.time())
    worker = GenerationWorker(model, tokenizer)
    app = FastAPI(title="MiniMind OpenAI-compatible API")
    app.state.worker = worker
    app.router.on_shutdown.append(worker.stop)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

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

    def make_job(request) -> _Job:
        if request.model != model_name:
            raise APIError(404, f"the model {request.model!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": _message_text(m)}
                    for m in request.messages]
        template_kwargs = request.chat_template_kwargs or {}
        thinking = request.enable_thinking
        for key in ("enable_thinking", "open_thinking"):
            if thinking is None and key in template_kwargs:
                thinking = bool(template_kwargs[key])
        prompt_len = len(tokenizer.encode_chat_prompt(messages, enable_thinking=thinking))
        max_tokens = request.max_completion_tokens or request.max_tokens
        if max_tokens is not None and max_tokens >= context:
            raise APIError(400, f"max_tokens is {max_tokens}, but this model's context is only {context} tokens",
                           param="max_tokens")
        if prompt_len >= context:
            raise APIError(400, f"the messages are {prompt_len} tokens long; this model's context is {context} tokens",
                           param="messages", code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(default_max_tokens, context - prompt_len)
        elif prompt_len + max_tokens > context:
            raise APIError(400, f"this model's context is {context} tokens, but {prompt_len} (messages) + "
                           f"{max_tokens} (max_tokens) were requested", param="max_tokens",
                           code="context_length_exceeded")
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
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
        return _Job(messages, params, thinking, stop, asyncio.get_running_loop())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatCompletionRequest):
        job = make_job(request)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        worker.submit(job)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(_stream_events(job, completion_id, now, model_name, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        content, reasoning = [], []
        try:
            while True:
                event = await job.events.get()
                if event[0] == "delta":
                    (reasoning if event[1] == "reasoning" else content).append(event[2])
                elif event[0] == "error":
                    raise APIError(500, event[1], kind="server_error")
                else:
                    _, finish_reason, prompt_tokens, completion_tokens = event
                    break
        finally:
            job.cancelled.set()  # a client that went away stops its generation
        message = {"role": "assistant", "content": "".join(content)}
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        return {
            "id": completion_id, "object": "chat.completion", "created": now, "model": model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    return app


async def _stream_events(job: _Job, completion_id: str, created: int, model_name: str, include_usage: bool):
    """Server-sent events: a role delta, content/reasoning deltas, a finish_reason chunk,
    optionally a usage chunk, then `data: [DONE]`."""

    def chunk(delta: dict, finish_reason=None, **extra) -> str:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}
        if include_usage and "usage" not in body:
            body["usage"] = None
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await job.events.get()
            if event[0] == "delta":
                key = "reasoning_content" if event[1] == "reasoning" else "content"
                yield chunk({key: event[2]})
            elif event[0] == "error":
                error = APIError(500, event[1], kind="server_error").body()
                yield f"data: {json.dumps(error)}\n\n"
                yield "data: [DONE]\n\n"
                return
            else:
                _, finish_reason, prompt_tokens, completion_tokens = event
                yield chunk({}, finish_reason)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind serve", description="Serve a MiniMind model over an OpenAI-compatible API.")
    parser.add_argument("--model", default="sft",
                        help=f"checkpoint folder, .pth file, or zoo name ({', '.join(ZOO_MODELS)}); default sft")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder or tokenizer.json (default: beside the model)")
    parser.add_argument("--preset", default=None, help="config preset for a .pth checkpoint")
    parser.add_argument("--lora", action="append", default=[], help="LoRA adapter folder (repeatable)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--model-name", default="minimind", help="the model id clients must send")
    parser.add_argument("--max-tokens", type=int, default=512, help="max_tokens when a request gives none")
    parser.add_argument("--temperature", type=float, default=0.7, help="temperature when a request gives none")
    parser.add_argument("--top-p", type=float, default=0.92, help="top_p when a request gives none")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import fastapi  # noqa: F401  (create_app imports it; fail before loading the model)
        import uvicorn
    except ImportError as error:
        missing = error.name or "FastAPI or uvicorn"
        print(f"minimind serve: {missing} is not installed; pip install 'minimind[serve]'", file=sys.stderr)
        return 2
    try:
        model, tokenizer = load_chat_model(args.model, args.tokenizer, args.lora, args.preset, args.device, args.dtype)
    except (ValueError, FileNotFoundError) as error:
        print(f"minimind serve: {error}", file=sys.stderr)
        return 2
    app = create_app(model, tokenizer, args.model_name, args.max_tokens, args.temperature, args.top_p)
    print(f"serving {args.model} as {args.model_name!r} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
