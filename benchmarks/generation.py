"""Greedy generation throughput: 200 new tokens from a 16-token prompt, ours (preallocated
cache, our decode loop) versus transformers' `generate` on the same exported weights."""
import torch

from benchmarks.common import alternate, build_pair, median


def bench_generate(preset: str, new_tokens: int = 200, prompt_len: int = 16, batch_size: int = 1,
                   repeats: int = 3) -> dict:
    from minimind.generate import SamplingParams, generate_batch

    ours, theirs = build_pair(preset)
    ours.eval(), theirs.eval()
    vocab = ours.config.vocab_size
    g = torch.Generator().manual_seed(0)
    # prompts avoid the stop token so both run the full length
    prompts = torch.randint(3, vocab, (batch_size, prompt_len), generator=g)
    params = SamplingParams(max_new_tokens=new_tokens, stop_token_ids=())

    @torch.inference_mode()
    def run_ours():
        rows = generate_batch(ours, prompts.tolist(), params)
        assert all(len(r) == new_tokens for r in rows)

    @torch.inference_mode()
    def run_theirs():
        out = theirs.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        assert out.shape[1] == prompt_len + new_tokens

    times = alternate({"ours": run_ours, "transformers": run_theirs}, repeats=repeats, warmup=1)
    tokens = batch_size * new_tokens
    result = {"preset": preset, "batch": batch_size}
    for name, ts in times.items():
        result[name] = {"tokens_per_s": tokens / median(ts)}
    result["ratio"] = result["ours"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    return result


def bench_fast_generate(preset: str = "minimind2-small", draft_preset: str = "book", new_tokens: int = 64,
                        prompt_len: int = 16, batch_size: int = 1, repeats: int = 3, draft_tokens: int = 4,
                        transformers: bool = True) -> dict:
    """Greedy tokens/s of the fast-inference options against fp32 in the same process, alternating:
    fp32 (our decode loop), int8 (`minimind.quantize`, weight-only), and at batch 1 speculative
    decoding (`minimind.speculative`) with a random-init `draft_preset` model of the target's
    vocabulary as the draft, fp32 and int8, and with the target's first layer as the draft
    (`early_exit_draft`); transformers' `generate` on the fp32 weights.
    Every contender runs the full length and, greedy, the fp32 tokens (checked for speculative;
    int8's agreement with fp32 is reported). Random weights say nothing about how often a
    trained draft is accepted, so the acceptance rate is reported beside the speed."""
    import copy

    from minimind.config import get_config
    from minimind.generate import SamplingParams, generate_batch
    from minimind.model import MiniMind
    from minimind.quantize import greedy_agreement, quantize_int8
    from minimind.speculative import SpeculativeStats, early_exit_draft, speculative_decode

    ours, theirs = build_pair(preset)
    ours.eval(), theirs.eval()
    vocab = ours.config.vocab_size
    int8 = quantize_int8(copy.deepcopy(ours))
    torch.manual_seed(1)
    draft = MiniMind(get_config(draft_preset, vocab_size=vocab,
                                max_position_embeddings=ours.config.max_position_embeddings)).eval()
    draft_int8 = quantize_int8(copy.deepcopy(draft))
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (batch_size, prompt_len), generator=g)
    params = SamplingParams(max_new_tokens=new_tokens, stop_token_ids=())
    early_exit = early_exit_draft(ours, 1)
    stats = {"speculative": SpeculativeStats(), "int8+speculative": SpeculativeStats(),
             "speculative, early exit": SpeculativeStats()}
    reference = generate_batch(ours, prompts.tolist(), params)

    def plain(model):
        @torch.inference_mode()
        def run():
            rows = generate_batch(model, prompts.tolist(), params)
            assert all(len(r) == new_tokens for r in rows)
        return run

    def speculative(target, draft_model, name):
        def run():
            out = [t for (t,) in speculative_decode(target, draft_model, prompts[0].tolist(), params, draft_tokens,
                                                    stats[name])]
            assert len(out) == new_tokens
            if target is ours:
                assert out == reference[0], "speculative greedy output differs from the target's"
        return run

    @torch.inference_mode()
    def run_theirs():
        out = theirs.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        assert out.shape[1] == prompt_len + new_tokens

    contenders = {"fp32": plain(ours), "int8": plain(int8)}
    if batch_size == 1:
        contenders["speculative"] = speculative(ours, draft, "speculative")
        contenders["int8+speculative"] = speculative(int8, draft_int8, "int8+speculative")
        contenders["speculative, early exit"] = speculative(ours, early_exit, "speculative, early exit")
    if transformers:
        contenders["transformers"] = run_theirs
    times = alternate(contenders, repeats=repeats, warmup=1)
    tokens = batch_size * new_tokens
    result = {"preset": preset, "draft": draft_preset, "batch": batch_size, "new_tokens": new_tokens,
              "draft_tokens": draft_tokens,
              "int8_greedy_agreement": greedy_agreement(ours, int8, prompts.tolist(), new_tokens)}
    for name, ts in times.items():
        result[name] = {"tokens_per_s": tokens / median(ts)}
        result[name]["vs_fp32"] = result[name]["tokens_per_s"] / (tokens / median(times["fp32"]))
        if name in stats:
            result[name]["acceptance_rate"] = stats[name].acceptance_rate
            result[name]["tokens_per_target_forward"] = stats[name].tokens_per_target_forward
    return result
