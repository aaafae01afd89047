"""The benchmarks run and report what they claim (tiny sizes; no timing is asserted)."""
import math

import pytest

from benchmarks.common import child_peak_rss_mb, table, training_flops_per_token
from benchmarks.generation import bench_generate
from benchmarks.train_step import bench_train
from minimind.config import get_config


def test_train_benchmark_reports_both_contenders_and_their_ratio():
    r = bench_train("book", batch_size=2, seq_len=16, repeats=1)
    for name in ("ours", "transformers"):
        assert r[name]["tokens_per_s"] > 0 and r[name]["gflops"] > 0
    assert math.isclose(r["ratio"], r["ours"]["tokens_per_s"] / r["transformers"]["tokens_per_s"])


def test_generation_benchmark_runs_the_full_length_for_both():
    r = bench_generate("book", new_tokens=8, prompt_len=4, batch_size=2, repeats=1)
    assert r["ours"]["tokens_per_s"] > 0 and r["transformers"]["tokens_per_s"] > 0


def test_peak_memory_is_measured_in_a_child_process():
    assert child_peak_rss_mb(["ours", "book", "1", "8"]) > 50  # at least torch itself


def test_flops_per_token_counts_six_times_the_matmul_parameters_plus_attention():
    config = get_config("book")
    flops = training_flops_per_token(config, seq_len=1)
    assert flops > 6 * config.vocab_size * config.hidden_size  # the tied LM head alone
    assert training_flops_per_token(config, 256) - training_flops_per_token(config, 0) == \
        12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * 256


def test_table_aligns_columns():
    lines = table([["a", 1], ["bbb", 22]], ["name", "n"]).splitlines()
    assert len({len(line) for line in lines}) == 1 and lines[1].startswith("----")


def test_checkpointing_contenders_are_timed_and_use_less_memory():
    r = bench_train("book", batch_size=4, seq_len=64, repeats=1, checkpointing=True)
    assert r["ours+ckpt"]["tokens_per_s"] > 0 and r["transformers+ckpt"]["tokens_per_s"] > 0
    assert math.isclose(r["ratio_ckpt"], r["ours+ckpt"]["tokens_per_s"] / r["transformers+ckpt"]["tokens_per_s"])
    args = ["book", "8", "256"]
    assert child_peak_rss_mb(["ours+ckpt", *args]) < child_peak_rss_mb(["ours", *args])


def test_sft_benchmark_times_three_contenders_on_half_supervised_batches():
    from benchmarks.train_step import bench_sft_train

    r = bench_sft_train("book", batch_size=2, seq_len=16, repeats=1)
    assert r["prompt_share"] == 0.5
    for name in ("ours", "ours, every logit", "transformers"):
        assert r[name]["tokens_per_s"] > 0
    assert math.isclose(r["ratio"], r["ours"]["tokens_per_s"] / r["transformers"]["tokens_per_s"])
    assert math.isclose(r["ratio_every_logit"], r["ours"]["tokens_per_s"] / r["ours, every logit"]["tokens_per_s"])


def test_fast_generation_benchmark_times_int8_and_speculative_against_fp32():
    from benchmarks.generation import bench_fast_generate

    r = bench_fast_generate("book", "tiny", new_tokens=6, prompt_len=4, batch_size=1, repeats=1, transformers=False)
    for name in ("fp32", "int8", "speculative", "int8+speculative", "speculative, early exit"):
        assert r[name]["tokens_per_s"] > 0
    assert r["fp32"]["vs_fp32"] == 1.0
    assert 0 <= r["speculative"]["acceptance_rate"] <= 1 and r["speculative"]["tokens_per_target_forward"] >= 1
    assert 0 <= r["int8_greedy_agreement"] <= 1
    batched = bench_fast_generate("book", "tiny", new_tokens=4, prompt_len=4, batch_size=3, repeats=1,
                                  transformers=False)
    assert "speculative" not in batched and batched["int8"]["tokens_per_s"] > 0


def test_fast_generation_benchmark_runs_llama_cpp_on_the_models_own_gguf_exports():
    """Where the optional `llama` extra is installed: llama.cpp decodes our f16 and Q8_0 exports of
    the same random weights, and its f16 greedy tokens are ours."""
    pytest.importorskip("llama_cpp")
    from benchmarks.generation import bench_fast_generate

    r = bench_fast_generate("book", "tiny", new_tokens=8, prompt_len=4, batch_size=1, repeats=1, transformers=False,
                            llama_cpp=True)
    for name in ("llama.cpp f16", "llama.cpp q8_0"):
        assert r[name]["tokens_per_s"] > 0 and 0 <= r[name]["greedy_agreement"] <= 1
    assert r["llama.cpp f16"]["greedy_agreement"] >= 0.75  # f16 rounding may move a near-tie of random logits
