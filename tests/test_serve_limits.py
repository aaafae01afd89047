"""The server's limits, in process on a model slowed to 20 ms a token (so a generation lasts as long
as its max_tokens says): a client that hangs up frees the worker, a full queue answers 429, slow
clients are cut off, the API key, and prompts tokenized off the event loop after a cheap length check."""
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
from minimind import serve  # noqa: E402
from minimind.tokenizer import EOS_ID  # noqa: E402
from inference_helpers import tiny_model, tiny_tokenizer  # noqa: E402

MESSAGES = [{"role": "user", "content": "Who are you?"}]
SECONDS_PER_TOKEN = 0.02


class SlowModel(torch.nn.Module):
    """The tiny model, SECONDS_PER_TOKEN per forward pass, never ending its reply by itself."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, *args, **kwargs):
        time.sleep(SECONDS_PER_TOKEN)
        output = self.inner(*args, **kwargs)
        output.logits[..., EOS_ID] = float("-inf")
        return output


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = tiny_tokenizer()
    return SlowModel(tiny_model(tokenizer.vocab_size, max_position_embeddings=1024)), tokenizer


@contextmanager
def running(app, limits=serve.ServerLimits()):
    import uvicorn

    sock = serve.listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(serve.uvicorn_config(app, limits))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def ask(base, max_tokens, timeout=60, **extra):
    return httpx.post(f"{base}/v1/chat/completions", timeout=timeout,
                      json={"model": "minimind", "messages": MESSAGES, "max_tokens": max_tokens, **extra})


def test_a_client_that_hangs_up_stops_its_generation(model_and_tokenizer):
    app = serve.create_app(*model_and_tokenizer)
    with running(app) as (base, _):
        with pytest.raises(httpx.ReadTimeout):
            ask(base, 400, timeout=0.5)  # 8 s of generation; the client gives up after half a second
        started = time.monotonic()
        assert ask(base, 2).status_code == 200
        assert time.monotonic() - started < 2, "the abandoned generation kept the worker busy"


def test_a_full_queue_answers_429_with_retry_after(model_and_tokenizer):
    app = serve.create_app(*model_and_tokenizer, limits=serve.ServerLimits(max_queue=1))
    with running(app) as (base, _):
        # 900 tokens (18 s at least): the first request is still generating when the third arrives,
        # even on a loaded machine (200 tokens once finished first under a full CI run, and the
        # waiting one moved up); leaving the block disconnects both, which cancels them
        body = {"model": "minimind", "messages": MESSAGES, "max_tokens": 900, "stream": True}
        with httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as second:
            with first.stream("POST", f"{base}/v1/chat/completions", json=body) as running_one:
                lines = running_one.iter_lines()  # kept: a dropped iterator closes the response
                next(lines)  # generating
                with second.stream("POST", f"{base}/v1/chat/completions", json=body):
                    deadline = time.monotonic() + 10
                    while app.app.state.worker.queued < 1:
                        assert time.monotonic() < deadline
                        time.sleep(0.02)
                    refused = ask(base, 2)
        assert refused.status_code == 429 and refused.headers["retry-after"] == str(serve.RETRY_AFTER_SECONDS)
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert ask(base, 2).status_code == 200  # the two that left freed the queue


def test_max_tokens_is_capped_per_request(model_and_tokenizer):
    app = serve.create_app(*model_and_tokenizer, limits=serve.ServerLimits(max_tokens=64))
    with running(app) as (base, _):
        response = ask(base, 65)
        assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"
        assert "at most 64" in response.json()["error"]["message"]


def test_prompts_are_tokenized_off_the_event_loop_after_a_cheap_length_check(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    threads = []
    encode = tokenizer.encode_chat_prompt

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return encode(*args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode_chat_prompt", recording)
    app = serve.create_app(model, tokenizer)
    with running(app) as (base, _):
        assert ask(base, 2).status_code == 200
        assert threads and all(thread.name.startswith("asyncio") for thread in threads), threads  # the loop's executor
        threads.clear()
        too_long = {"role": "user", "content": "Varo " * 200_000}  # 1 MB of text: far beyond 1024 tokens
        response = httpx.post(f"{base}/v1/chat/completions", timeout=30,
                              json={"model": "minimind", "messages": [too_long]})
        assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"
        assert threads == []  # refused without tokenizing


def test_an_api_key_is_required_when_set(model_and_tokenizer):
    app = serve.create_app(*model_and_tokenizer, api_key="s3cret")
    with running(app) as (base, _):
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            response = httpx.get(f"{base}/v1/models", headers=headers)
            assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{base}/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{base}/health").status_code == 200  # for load balancers and scripts


@pytest.mark.parametrize("what", ["head", "body"])
def test_a_client_that_sends_its_request_too_slowly_is_cut_off(model_and_tokenizer, what):
    app = serve.create_app(*model_and_tokenizer)
    with running(app, serve.ServerLimits(read_timeout=1.0)) as (base, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            trickle = b"X-Slow: " + b"a" * 40 if what == "head" else b'{"model": "minimind", "messages": []}'
            client.sendall(head if what == "head" else head + b"Content-Length: 100000\r\n\r\n")
            started, closed = time.monotonic(), False
            for byte in trickle:  # one byte every 0.1 s: each arrives long before any idle timeout
                try:
                    client.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                time.sleep(0.1)
            if not closed:
                client.settimeout(5)
                closed = client.recv(1024) == b""
            assert closed and time.monotonic() - started < 4.5
        assert httpx.get(f"{base}/health").status_code == 200
