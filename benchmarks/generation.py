"""Greedy generation throughput: 200 new tokens from a 16-token prompt, ours (preallocated
cache, our decode loop) versus transformers' `generate` on the same exported weights."""
from pathlib import Path

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


def llama_cpp_available() -> bool:
    """Whether `llama-cpp-python` (llama.cpp's Python binding, the optional `llama` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_contender(model, gguf_dtype: str, prompt: list, new_tokens: int, folder, threads: int):
    """A callable decoding `new_tokens` greedy tokens of `prompt` with llama.cpp on the model's own
    GGUF export (`gguf_dtype`: f16 or q8_0), and a list that holds the tokens of its last run.
    The tokenizer written into the file is the book's (the model's vocabulary must be its size):
    llama.cpp is given token ids, so only the file's layout matters here."""
    from llama_cpp import Llama

    from minimind.export.gguf import export_gguf
    from minimind.zoo import tokenizer as book_tokenizer

    path = export_gguf(model, book_tokenizer(), Path(folder) / f"bench-{gguf_dtype}.gguf", dtype=gguf_dtype,
                       modelfile=False)
    llm = Llama(model_path=str(path), n_ctx=len(prompt) + new_tokens + 8, n_threads=threads,
                n_threads_batch=threads, n_batch=64, verbose=False, seed=0)
    last = []

    def run():
        last.clear()
        for token in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                  reset=True):
            last.append(int(token))  # llama.cpp does not stop at the end-of-text token here: ids only
            if len(last) == new_tokens:
                break
    return run, last


def bench_fast_generate(preset: str = "minimind2-small", draft_preset: str = "book", new_tokens: int = 64,
                        prompt_len: int = 16, batch_size: int = 1, repeats: int = 3, draft_tokens: int = 4,
                        transformers: bool = True, llama_cpp: bool | None = None, vocab_size: int | None = None) -> dict:
    """Greedy tokens/s of the fast-inference options against fp32 in the same process, alternating:
    fp32 (our decode loop), int8 (`minimind.quantize`, weight-only), and at batch 1 speculative
    decoding (`minimind.speculative`) with a random-init `draft_preset` model of the target's
    vocabulary as the draft, fp32 and int8, and with the target's first layer as the draft
    (`early_exit_draft`); transformers' `generate` on the fp32 weights.
    Every contender runs the full length and, greedy, the fp32 tokens (checked for speculative;
    int8's agreement with fp32 is reported). Random weights say nothing about how often a
    trained draft is accepted, so the acceptance rate is reported beside the speed.
    llama_cpp (default: when `llama-cpp-python` is installed; batch 1 only): llama.cpp on the
    target's own f16 and Q8_0 GGUF exports, same prompt, greedy; the share of its tokens equal to
    our fp32 tokens is reported (f16 / q8_0 rounding may move an argmax of random weights).
    vocab_size: the target's vocabulary (default the preset's; llama.cpp's rows need the book
    tokenizer's size, which `minimind.zoo.tokenizer()` trains on first use)."""
    import copy

    from minimind.config import get_config
    from minimind.generate import SamplingParams, generate_batch
    from minimind.model import MiniMind
    from minimind.quantize import greedy_agreement, quantize_int8
    from minimind.speculative import SpeculativeStats, early_exit_draft, speculative_decode

    import tempfile

    llama_cpp = (llama_cpp_available() if llama_cpp is None else llama_cpp) and batch_size == 1
    if llama_cpp and vocab_size is None:
        from minimind.zoo import tokenizer as book_tokenizer

        vocab_size = book_tokenizer().vocab_size
    ours, theirs = build_pair(preset, vocab_size=vocab_size)
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
    llama_tokens = {}
    folder = tempfile.TemporaryDirectory(prefix="minimind-bench-")
    if llama_cpp:
        for dtype in ("f16", "q8_0"):
            name = f"llama.cpp {dtype}"
            contenders[name], llama_tokens[name] = llama_cpp_contender(
                ours, dtype, prompts[0].tolist(), new_tokens, folder.name, torch.get_num_threads())
    times = alternate(contenders, repeats=repeats, warmup=1)
    folder.cleanup()
    tokens = batch_size * new_tokens
    result = {"preset": preset, "draft": draft_preset, "batch": batch_size, "new_tokens": new_tokens, "vocab_size": vocab,
              "draft_tokens": draft_tokens,
              "int8_greedy_agreement": greedy_agreement(ours, int8, prompts.tolist(), new_tokens)}
    for name, ts in times.items():
        result[name] = {"tokens_per_s": tokens / median(ts)}
        result[name]["vs_fp32"] = result[name]["tokens_per_s"] / (tokens / median(times["fp32"]))
        if name in stats:
            result[name]["acceptance_rate"] = stats[name].acceptance_rate
            result[name]["tokens_per_target_forward"] = stats[name].tokens_per_target_forward
        if name in llama_tokens:
            same = sum(int(a == b) for a, b in zip(llama_tokens[name], reference[0]))
            result[name]["greedy_agreement"] = same / new_tokens
    return result
