"""Speculative decoding (`minimind.speculative`): rewinding the KV cache, greedy output equal to the
target's own token for token, the accept/reject rule keeping the target's distribution (checked
statistically, with fixed seeds), the statistics, and the `--draft` loader/stream wiring."""
import collections

import pytest
import torch

from minimind.generate import SamplingParams, generate, generate_batch, sampling_distribution, stream_generate
from minimind.model import KVCache
from minimind.speculative import (SpeculativeModel, SpeculativeStats, accept_or_resample, rewind,
                                  speculative_decode)
from inference_helpers import save_tiny_checkpoint, tiny_model

VOCAB = 256


@pytest.fixture(scope="module")
def target():
    return tiny_model(VOCAB, seed=0, std=0.1, num_hidden_layers=3)


@pytest.fixture(scope="module")
def draft():
    return tiny_model(VOCAB, seed=1, std=0.1, hidden_size=32, num_hidden_layers=1)


def prompts(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (int(length),), generator=g).tolist()
            for length in torch.randint(1, 12, (n,), generator=g)]


def run(target, draft, prompt, params, k, stats=None):
    return [t for (t,) in speculative_decode(target, draft, prompt, params, k, stats)]


def test_rewind_makes_the_cache_as_if_the_dropped_tokens_were_never_fed(target):
    ids = torch.tensor([prompts(1)[0] + [5, 6, 7, 8]])
    with torch.no_grad():
        cache = KVCache(target.config, 1, 32)
        target(ids[:, :-3], cache=cache, use_cache=True)
        target(ids[:, -3:], cache=cache, use_cache=True)  # three tokens we then take back
        rewind(cache, ids.size(1) - 3)
        assert cache.length == ids.size(1) - 3 and int(cache.next_position) == ids.size(1) - 3
        assert not cache.mask[:, cache.length:].any()
        again = target(torch.tensor([[9]]), cache=cache, use_cache=True).logits[0, -1]
        fresh = target(torch.cat([ids[:, :-3], torch.tensor([[9]])], dim=1)).logits[0, -1]
    torch.testing.assert_close(again, fresh, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError):
        rewind(cache, cache.length + 1)


def test_rewind_in_a_left_padded_batch_counts_each_rows_real_tokens(target):
    cache = KVCache(target.config, 2, 16)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        target(torch.randint(3, VOCAB, (2, 5)), attention_mask=mask, cache=cache, use_cache=True)
    rewind(cache, 4)
    assert cache.next_position.tolist() == [2, 4]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_greedy_speculative_output_is_the_targets_greedy_output(target, draft, k):
    params = SamplingParams(max_new_tokens=20, stop_token_ids=())
    for prompt in prompts(4, seed=k):
        stats = SpeculativeStats()
        assert run(target, draft, prompt, params, k, stats) == generate(target, prompt, params)
        assert stats.tokens == 20 and stats.rounds <= 20 and stats.drafted <= k * stats.rounds


def test_greedy_with_a_stop_token_and_top_k_settings(target, draft):
    first = generate(target, prompts(1)[0], SamplingParams(max_new_tokens=12, stop_token_ids=()))
    stop = first[7]
    params = SamplingParams(max_new_tokens=12, stop_token_ids=(stop,), top_k=5, top_p=0.5)
    out = run(target, draft, prompts(1)[0], params, 3)
    assert out == first[:first.index(stop) + 1]  # the stop token is yielded, then nothing


def test_a_perfect_draft_is_always_accepted(target):
    params = SamplingParams(max_new_tokens=13, stop_token_ids=())
    stats = SpeculativeStats()
    run(target, target, prompts(1)[0], params, 4, stats)
    assert stats.acceptance_rate == 1.0
    assert stats.rounds == 3 and stats.tokens_per_target_forward == pytest.approx(13 / 3)  # 5 + 5 + 3
    sampled = SpeculativeStats()
    run(target, target, prompts(1)[0], params.replace(temperature=1.0, seed=3), 4, sampled)
    assert sampled.acceptance_rate == 1.0  # p / q = 1 everywhere


def test_a_bad_draft_is_mostly_rejected_but_the_output_is_unchanged(target, draft):
    params = SamplingParams(max_new_tokens=16, stop_token_ids=())
    stats = SpeculativeStats()
    prompt = prompts(1)[0]
    assert run(target, draft, prompt, params, 4, stats) == generate(target, prompt, params)
    assert stats.acceptance_rate < 0.5


def total_variation(counts: collections.Counter, probs: torch.Tensor) -> float:
    n = sum(counts.values())
    empirical = torch.zeros_like(probs)
    for token, c in counts.items():
        empirical[token] = c / n
    return 0.5 * float((empirical - probs).abs().sum())


def test_the_accept_reject_rule_samples_the_target_distribution():
    """One position, V = 8: proposals drawn from q, the rule's first token must follow p."""
    p = torch.tensor([0.30, 0.05, 0.20, 0.0, 0.15, 0.10, 0.15, 0.05])
    q = torch.tensor([0.05, 0.40, 0.05, 0.20, 0.05, 0.05, 0.10, 0.10])
    assert 0.5 * float((p - q).abs().sum()) > 0.5  # so sampling q instead of p would fail the test
    g = torch.Generator().manual_seed(0)
    counts = collections.Counter()
    n = 20000
    accepted = 0
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=g))
        kept, token = accept_or_resample(torch.stack([p, p]), q[None], [x], g)
        counts[x if kept else token] += 1
        accepted += kept
    assert total_variation(counts, p) < 0.02
    # the acceptance rate is sum min(p, q) = 1 - TV(p, q)
    assert accepted / n == pytest.approx(float(torch.minimum(p, q).sum()), abs=0.02)


def test_speculative_sampling_keeps_the_targets_distribution_end_to_end():
    """Tiny vocabulary (16), a bad draft: the first two sampled tokens follow the target's law."""
    vocab = 16
    target = tiny_model(vocab, seed=0, std=0.5)
    draft = tiny_model(vocab, seed=7, std=0.5, hidden_size=32, num_hidden_layers=1)
    prompt = [3, 4, 5]
    params = SamplingParams(temperature=1.0, max_new_tokens=2, stop_token_ids=())
    with torch.no_grad():
        p1 = sampling_distribution(target(torch.tensor([prompt])).logits[0, -1], 1.0)
        q1 = sampling_distribution(draft(torch.tensor([prompt])).logits[0, -1], 1.0)
        second = torch.stack([sampling_distribution(target(torch.tensor([prompt + [t]])).logits[0, -1], 1.0)
                              for t in range(vocab)])
    p2 = p1 @ second  # marginal of the second token
    assert 0.5 * float((p1 - q1).abs().sum()) > 0.3  # the draft alone would be far off
    first_counts, second_counts = collections.Counter(), collections.Counter()
    stats = SpeculativeStats()
    for seed in range(1500):
        a, b = run(target, draft, prompt, params.replace(seed=seed), 1, stats)
        first_counts[a] += 1
        second_counts[b] += 1
    assert total_variation(first_counts, p1) < 0.07
    assert total_variation(second_counts, p2) < 0.07
    assert 0 < stats.acceptance_rate < 1


def test_refuses_what_it_cannot_do(target, draft):
    with pytest.raises(ValueError, match="repetition_penalty"):
        run(target, draft, [5], SamplingParams(repetition_penalty=1.2), 2)
    with pytest.raises(ValueError, match="vocabulary"):
        run(target, tiny_model(VOCAB + 1), [5], SamplingParams(), 2)
    with pytest.raises(ValueError, match="context"):
        run(target, draft, [5] * 10, SamplingParams(max_new_tokens=target.config.max_position_embeddings), 2)
    with pytest.raises(ValueError, match="vocabulary"):
        SpeculativeModel(target, tiny_model(VOCAB + 1))


def test_speculative_model_streams_speculatively_and_batches_with_the_target(target, draft):
    model = SpeculativeModel(target, draft, draft_tokens=3)
    params = SamplingParams(max_new_tokens=10, stop_token_ids=())
    prompt = prompts(1)[0]
    stream = stream_generate(model, prompt, params)
    assert list(stream) == generate(target, prompt, params)
    assert stream.finish_reason == "length" and stream.completion_tokens == 10
    assert model.last_stats.tokens == 10 and model.last_stats.rounds < 10 + 1
    assert model.stats.tokens == 10
    assert generate_batch(model, prompts(3), params) == generate_batch(target, prompts(3), params)
    # the repetition penalty falls back to the target's own decoding
    penalised = params.replace(repetition_penalty=1.3)
    assert generate(model, prompt, penalised) == generate(target, prompt, penalised)
    assert model.stats.tokens == 10
    assert model.num_parameters() == target.num_parameters() and model.config is target.config


def test_load_chat_model_with_a_draft(tmp_path):
    from minimind.inference import load_chat_model

    save_tiny_checkpoint(tmp_path / "target", seed=0)
    save_tiny_checkpoint(tmp_path / "draft", seed=1, hidden_size=32, num_hidden_layers=1)
    model, tokenizer = load_chat_model(tmp_path / "target", device="cpu", dtype="float32",
                                       draft=tmp_path / "draft", draft_tokens=2, quantize="int8")
    assert isinstance(model, SpeculativeModel) and model.draft_tokens == 2
    from minimind.quantize import quantized_modules

    assert quantized_modules(model.target) and quantized_modules(model.draft)
    params = SamplingParams(max_new_tokens=6, stop_token_ids=())
    prompt = tokenizer.encode("Who are you?")
    assert generate(model, prompt, params) == generate(model.target, prompt, params)
    with pytest.raises(ValueError, match="draft_tokens"):
        load_chat_model(tmp_path / "target", device="cpu", draft=tmp_path / "draft", draft_tokens=0)


def test_chat_cli_with_a_draft_and_int8_prints_the_targets_greedy_reply(tmp_path, capsys):
    from minimind.chat import main
    from minimind.inference import load_chat_model, stream_reply

    save_tiny_checkpoint(tmp_path / "target", seed=0)
    save_tiny_checkpoint(tmp_path / "draft", seed=1, hidden_size=32, num_hidden_layers=1)
    code = main(["--model", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"), "--draft_tokens", "3",
                 "--device", "cpu", "--temperature", "0", "--max-new-tokens", "12", "--prompt", "Who are you?"])
    out, err = capsys.readouterr()
    assert code == 0 and "of drafts accepted" in err and "tokens per forward" in err
    model, tokenizer = load_chat_model(tmp_path / "target", device="cpu", dtype="float32")
    reply = stream_reply(model, tokenizer, [{"role": "user", "content": "Who are you?"}],
                         SamplingParams(max_new_tokens=12))
    list(reply)
    assert out.strip().endswith(reply.content)
    assert main(["--model", str(tmp_path / "target"), "--quantize", "int8", "--device", "cpu",
                 "--max-new-tokens", "4", "--prompt", "hi"]) == 0


def test_an_early_exit_draft_shares_the_targets_weights_and_keeps_its_output(target):
    from minimind.speculative import early_exit_draft

    draft = early_exit_draft(target, 1)
    assert draft.config.num_hidden_layers == 1 and target.config.num_hidden_layers == 3
    assert draft.model.layers[0] is target.model.layers[0] and draft.lm_head is target.lm_head
    assert draft.model.embed_tokens.weight.data_ptr() == target.model.embed_tokens.weight.data_ptr()
    params = SamplingParams(max_new_tokens=12, stop_token_ids=())
    stats = SpeculativeStats()
    prompt = prompts(1)[0]
    assert run(target, draft, prompt, params, 3, stats) == generate(target, prompt, params)
    assert stats.rounds > 0
    with pytest.raises(ValueError, match="num_layers"):
        early_exit_draft(target, 3)


def test_the_server_replies_with_a_draft_as_without(tmp_path):
    """`minimind serve --draft`: the worker streams each reply speculatively, greedy replies unchanged."""
    pytest.importorskip("fastapi")
    import threading
    import time

    import httpx
    import uvicorn

    from minimind import serve
    from minimind.inference import load_chat_model, stream_reply

    save_tiny_checkpoint(tmp_path / "target", seed=0)
    save_tiny_checkpoint(tmp_path / "draft", seed=1, hidden_size=32, num_hidden_layers=1)
    args = serve.build_parser().parse_args(["--model", str(tmp_path / "target"), "--draft", str(tmp_path / "draft"),
                                            "--draft_tokens", "2", "--quantize", "none"])
    model, tokenizer = load_chat_model(args.model, device="cpu", dtype="float32", quantize=args.quantize,
                                       draft=args.draft, draft_tokens=args.draft_tokens)
    app = serve.create_app(model, tokenizer)
    sock = serve.listen("127.0.0.1", 0)
    server = uvicorn.Server(serve.uvicorn_config(app, serve.ServerLimits()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        messages = [{"role": "user", "content": "Who are you?"}]
        response = httpx.post(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions", timeout=60,
                              json={"model": "minimind", "messages": messages, "max_tokens": 10, "temperature": 0})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert response.status_code == 200
    assert model.stats.rounds > 0  # it went through the speculative decoder
    expected = stream_reply(model.target, tokenizer, messages, SamplingParams(max_new_tokens=10))
    list(expected)
    assert response.json()["choices"][0]["message"]["content"] == expected.content


def test_a_draft_with_another_tokenizer_is_refused(tmp_path):
    from minimind.inference import load_chat_model
    from minimind.tokenizer import train_tokenizer

    save_tiny_checkpoint(tmp_path / "target", seed=0)
    save_tiny_checkpoint(tmp_path / "draft", seed=1, hidden_size=32, num_hidden_layers=1)
    other = train_tokenizer(["Completely different words, другие слова, 12345."] * 30, vocab_size=300)
    other.save(tmp_path / "draft")
    with pytest.raises(ValueError, match="another tokenizer"):
        load_chat_model(tmp_path / "target", device="cpu", draft=tmp_path / "draft")


def test_the_web_launcher_passes_the_speed_flags_to_the_app(monkeypatch):
    import json

    from minimind import web

    calls = []
    monkeypatch.setattr(web.subprocess, "call", lambda command, env: calls.append(env) or 0)
    assert web.main(["--model", "a", "--draft", "small", "--draft_tokens", "3", "--quantize", "int8"]) == 0
    options = json.loads(calls[0][web.OPTIONS_ENV])
    assert (options["draft"], options["draft_tokens"], options["quantize"]) == ("small", 3, "int8")
