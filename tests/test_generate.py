"""Generation: sampling rules equal transformers' logits processors, cached and batched decoding
equal full recomputation, limits and stop tokens are exact, the thinking budget is enforced."""
import pytest
import torch

from minimind.config import get_config
from minimind.generate import (
    IncrementalDecoder,
    SamplingParams,
    apply_repetition_penalty,
    generate,
    generate_batch,
    shared_prefix_length,
    sample_next_token,
    stream_generate,
    top_k_filter,
    top_p_filter,
)
from minimind.runtime import resolve_device, resolve_dtype
from minimind.model import MiniMind
from inference_helpers import tiny_tokenizer


@pytest.fixture(scope="module")
def model():
    """A tiny random model whose weights are large enough that greedy output varies token to token."""
    torch.manual_seed(0)
    model = MiniMind(get_config("tiny")).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model


def reference_greedy(model, prompt, steps, logits_processor=None):
    """Greedy decoding by full recomputation (no cache), optionally through a transformers processor."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[:, -1, :]
            if logits_processor is not None:
                logits = logits_processor(torch.tensor([ids]), logits)
            ids.append(int(logits.argmax(-1)))
    return ids[len(prompt):]


PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [200]]


def test_cached_greedy_equals_full_recomputation(model):
    for prompt in PROMPTS:
        assert generate(model, prompt, max_new_tokens=24, stop_token_ids=()) == reference_greedy(model, prompt, 24)


def test_left_padded_batch_equals_each_prompt_alone(model):
    batch = generate_batch(model, PROMPTS, max_new_tokens=24, stop_token_ids=())
    alone = [generate(model, p, max_new_tokens=24, stop_token_ids=()) for p in PROMPTS]
    assert batch == alone


def test_a_shared_prefix_computed_once_gives_each_prompts_own_tokens(model):
    prefix = [7, 3, 9, 12, 40, 41, 42, 5, 6, 7, 8]
    prompts = [prefix + [10, 11], prefix + [1, 2, 3, 4, 5, 6], prefix + [200], prefix]
    assert shared_prefix_length(prompts) == len(prefix) - 1  # the whole prefix would leave the last prompt nothing
    alone = [generate(model, p, max_new_tokens=20, stop_token_ids=()) for p in prompts]
    assert generate_batch(model, prompts, max_new_tokens=20, stop_token_ids=(), share_prefix=True) == alone
    assert generate_batch(model, PROMPTS, max_new_tokens=20, stop_token_ids=(), share_prefix=True) == \
        [generate(model, p, max_new_tokens=20, stop_token_ids=()) for p in PROMPTS]  # nothing shared: as before
    sampled = dict(max_new_tokens=12, stop_token_ids=(), temperature=1.0, seed=3)
    assert generate_batch(model, prompts[:2], share_prefix=True, **sampled) == generate_batch(model, prompts[:2], **sampled)


def test_batch_rows_stop_independently(model):
    alone = [generate(model, p, max_new_tokens=16, stop_token_ids=()) for p in PROMPTS]
    stop = alone[0][5]  # the first row meets this token at its 6th step
    batch = generate_batch(model, PROMPTS, max_new_tokens=16, stop_token_ids=(stop,))
    for row, full in zip(batch, alone):
        expected = full[: full.index(stop)] if stop in full else full
        assert row == expected


def test_max_new_tokens_is_exact(model):
    for n in (1, 2, 17):
        stream = stream_generate(model, PROMPTS[0], max_new_tokens=n, stop_token_ids=())
        assert len(list(stream)) == n
        assert stream.finish_reason == "length" and stream.completion_tokens == n


def test_stop_token_ends_generation_and_is_not_returned(model):
    full = generate(model, PROMPTS[0], max_new_tokens=20, stop_token_ids=())
    stop = full[7]
    first = full.index(stop)
    stream = stream_generate(model, PROMPTS[0], max_new_tokens=20, stop_token_ids=(stop,))
    tokens = list(stream)
    assert tokens == full[:first]
    assert stream.finish_reason == "stop"
    assert stream.completion_tokens == first + 1  # the stop token was generated, so it counts
    assert stream.prompt_tokens == len(PROMPTS[0])


def test_stream_close_stops_early(model):
    stream = stream_generate(model, PROMPTS[0], max_new_tokens=50, stop_token_ids=())
    first = [next(stream), next(stream)]
    stream.close()
    assert list(stream) == [] and stream.finish_reason == "cancelled" and len(first) == 2


def test_temperature_zero_is_greedy_whatever_top_k_and_top_p(model):
    greedy = generate(model, PROMPTS[1], max_new_tokens=12, stop_token_ids=())
    assert generate(model, PROMPTS[1], max_new_tokens=12, stop_token_ids=(), temperature=0.0, top_k=3, top_p=0.1) == greedy
    logits = torch.randn(4, 50)
    assert torch.equal(sample_next_token(logits, temperature=0.0), logits.argmax(-1))


def test_top_k_one_sampling_is_greedy(model):
    greedy = generate(model, PROMPTS[2], max_new_tokens=12, stop_token_ids=())
    sampled = generate(model, PROMPTS[2], max_new_tokens=12, stop_token_ids=(), temperature=1.3, top_k=1, seed=3)
    assert sampled == greedy


def test_seeded_sampling_is_reproducible(model):
    params = SamplingParams(temperature=1.0, max_new_tokens=20, stop_token_ids=(), seed=123)
    first = generate(model, PROMPTS[0], params)
    assert generate(model, PROMPTS[0], params) == first
    assert generate(model, PROMPTS[0], params.replace(seed=124)) != first


def test_a_row_with_its_own_seed_samples_the_same_in_any_batch(model):
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, stop_token_ids=())
    together = generate_batch(model, PROMPTS[:3], params, row_seeds=[7, 8, 9])
    assert [generate_batch(model, [prompt], params, row_seeds=[seed])[0]
            for prompt, seed in zip(PROMPTS[:3], (7, 8, 9))] == together
    assert generate_batch(model, PROMPTS[1:3], params, row_seeds=[8, 9]) == together[1:]
    assert generate_batch(model, PROMPTS[:1], params, row_seeds=[70])[0] != together[0]
    with pytest.raises(ValueError, match="row_seeds has 2 seeds for 3 prompts"):
        generate_batch(model, PROMPTS[:3], params, row_seeds=[1, 2])


def test_filters_equal_transformers_logits_warpers():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits = torch.randn(6, 97) * 3
    ids = torch.randint(0, 97, (6, 11))
    for k in (1, 5, 40):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()))
    for p in (0.05, 0.5, 0.9, 0.99):
        assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(p)(ids, logits.clone()))
    assert torch.allclose(logits / 0.7, TemperatureLogitsWarper(0.7)(ids, logits.clone()))
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, ids, True)
    for penalty in (0.8, 1.3):
        ours = apply_repetition_penalty(logits, seen, penalty)
        assert torch.allclose(ours, RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone()))


def test_repetition_penalty_generation_equals_transformers_processor(model):
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    prompt = PROMPTS[2]
    ours = generate(model, prompt, max_new_tokens=20, stop_token_ids=(), repetition_penalty=1.5)
    reference = reference_greedy(model, prompt, 20, RepetitionPenaltyLogitsProcessor(1.5))
    assert ours == reference
    assert ours != generate(model, prompt, max_new_tokens=20, stop_token_ids=())


def test_sampling_frequencies_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    tokens = sample_next_token(logits, temperature=0.8, top_k=4, top_p=1.0, generator=generator)
    freq = torch.bincount(tokens, minlength=6).float() / tokens.numel()
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.5, 0.0]) / 0.8, dim=0)
    assert torch.allclose(freq[:4], expected, atol=0.015)
    assert freq[4:].sum() == 0


THINK_START, THINK_END = (3,), (4,)


def think_params(**fields):
    return SamplingParams(think_start_ids=THINK_START, think_end_ids=THINK_END, stop_token_ids=(), **fields)


def test_thinking_budget_forces_the_closing_tag(model):
    prompt = [10, 11, 12, *THINK_START]
    free = generate(model, prompt, think_params(max_new_tokens=20))
    assert 4 not in free[:6]  # this model does not close the block on its own within the budget
    for budget in (0, 3, 6):
        tokens = generate(model, prompt, think_params(max_new_tokens=20, thinking_budget=budget))
        assert tokens[:budget] == free[:budget]
        assert tokens[budget] == THINK_END[0]


def test_thinking_budget_is_ignored_outside_a_think_block(model):
    prompt = [10, 11, 12, *THINK_START, 20, *THINK_END]
    free = generate(model, prompt, think_params(max_new_tokens=12))
    assert generate(model, prompt, think_params(max_new_tokens=12, thinking_budget=0)) == free


def test_thinking_budget_forces_a_multi_token_closing_tag(model):
    prompt = [10, 11, 12, 30, 31]
    params = SamplingParams(think_start_ids=(30, 31), think_end_ids=(40, 41, 42), thinking_budget=2,
                            max_new_tokens=10, stop_token_ids=())
    tokens = generate(model, prompt, params)
    assert tokens[2:5] == [40, 41, 42]


def test_thinking_budget_applies_per_row_in_a_batch(model):
    thinking = [10, 11, 12, *THINK_START]
    plain = [7, 8]
    rows = generate_batch(model, [thinking, plain], think_params(max_new_tokens=10, thinking_budget=2))
    assert rows[0][2] == THINK_END[0]
    assert rows[1] == generate(model, plain, think_params(max_new_tokens=10))


def test_bad_options_fail_loudly():
    with pytest.raises(TypeError):
        SamplingParams().replace(max_length=10)  # upstream silently ignored unknown options
    for bad in (dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1), dict(max_new_tokens=0),
                dict(repetition_penalty=0.0), dict(temperature=float("nan")), dict(thinking_budget=5)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def test_prompt_errors_are_clear(model):
    with pytest.raises(ValueError, match="empty"):
        generate(model, [], max_new_tokens=3)
    with pytest.raises(ValueError, match="context"):
        generate(model, [5] * 250, max_new_tokens=10)


def test_cache_is_allocated_once(model, monkeypatch):
    from minimind import model as model_module

    def no_growth(cache, new_tokens):
        assert cache.length + new_tokens <= cache.capacity, "the KV cache had to grow during generation"

    monkeypatch.setattr(model_module.KVCache, "reserve", no_growth)
    assert len(generate_batch(model, PROMPTS, max_new_tokens=30, stop_token_ids=())[0]) == 30


def test_incremental_decoder_releases_whole_characters():
    tokenizer = tiny_tokenizer()
    text = "MiniMind 说：你好，世界！🙂 Ça va? 123 <think>x</think>\n"
    ids = tokenizer.encode(text)
    assert any("\ufffd" in tokenizer.decode([i]) for i in ids)  # some tokens are parts of a character
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_dtype_choice_never_uses_half_on_cpu():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int8", "cpu")
    # training and inference share the rule; only training refuses fp16 without CUDA (its grad scaler)
    assert resolve_dtype("auto", "cpu", training=True) == torch.float32
    assert resolve_dtype("fp16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_dtype("fp16", "cpu", training=True)


def test_device_names_are_checked_before_anything_loads():
    assert resolve_device("cpu") == resolve_device("auto", training=True) == torch.device("cpu")
    with pytest.raises(ValueError, match="--device nonsense"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda", training=True)


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-40])
def test_a_temperature_so_small_that_logits_overflow_samples_the_most_likely_token(temperature):
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 10
    logits[1] -= 100  # a row of only negative logits overflows to -inf everywhere
    for top_k, top_p in ((0, 1.0), (5, 0.9)):
        tokens = sample_next_token(logits, temperature, top_k, top_p, torch.Generator().manual_seed(1))
        assert tokens.tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 2**70, 1.5, "7"])
def test_a_seed_torch_cannot_take_is_refused_when_the_params_are_made(seed):
    with pytest.raises(ValueError, match="seed must be"):
        SamplingParams(temperature=1.0, seed=seed)
    assert SamplingParams(temperature=1.0, seed=2**64 - 1).seed == 2**64 - 1
