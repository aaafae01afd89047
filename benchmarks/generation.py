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
