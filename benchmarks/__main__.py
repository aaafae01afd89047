"""`make bench`: every benchmark, printed as tables with ratios measured in the same run.

    python -m benchmarks            # the full set (a few minutes on 2 cores)
    python -m benchmarks --quick    # the chapters' preset only (for a smoke run)
    python -m benchmarks --json out.json
    python -m benchmarks --only fast --threads 1   # only the int8 / speculative generation table
"""
import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from benchmarks.common import child_peak_rss_mb, matmul_peak_gflops, set_threads, table
from benchmarks.generation import bench_fast_generate, bench_generate, llama_cpp_available
from benchmarks.train_step import bench_sft_train, bench_train

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="chapters' preset only, fewer repetitions")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile training contenders (they add a minute or two of compiling)")
    parser.add_argument("--only", choices=["train", "sft", "generate", "fast"], action="append", default=None,
                        help="run only these tables (repeatable; default all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    parser.add_argument("--fast-tokens", type=int, default=64, help="new tokens per run of the fast-inference table")
    args = parser.parse_args(argv)
    cores = set_threads(args.threads)
    wanted = lambda table_name: args.only is None or table_name in args.only  # noqa: E731
    results = {"machine": machine(), "threads": cores}
    print(f"machine: {results['machine']}\n")

    peak = matmul_peak_gflops()
    results["matmul_peak_gflops"] = peak
    print(f"fp32 matmul peak (1024², best of 20): {peak:.0f} GFLOP/s\n")

    train_cases = [] if not wanted("train") else \
        [("book", 16, 256)] if args.quick else [("minimind2-small", 4, 512), ("book", 16, 256)]
    rows = []
    results["train"] = []
    for preset, b, t in train_cases:
        compile_ = args.compile and not args.quick
        checkpointing = preset == "minimind2-small"  # the memory target's case
        r = bench_train(preset, b, t, repeats=3 if args.quick else 5, compile=compile_, checkpointing=checkpointing)
        memory_names = ("ours", "transformers") + (("ours+ckpt", "transformers+ckpt") if checkpointing else ())
        for name in memory_names:
            r[name]["peak_rss_mb"] = child_peak_rss_mb([name, preset, str(b), str(t)])
        results["train"].append(r)
        names = (("ours", "transformers") + (("ours+compile", "transformers+compile") if compile_ else ())
                 + (("ours+ckpt", "transformers+ckpt") if checkpointing else ()))
        for name in names:
            x = r[name]
            ratio = {"ours": r["ratio"], "ours+compile": r.get("ratio_compiled"), "ours+ckpt": r.get("ratio_ckpt")}.get(name)
            rows.append([preset, r["batch"], name, f"{x['tokens_per_s']:.0f}", f"{x['gflops']:.1f}",
                         f"{x['gflops'] / peak:.0%}", f"{x['peak_rss_mb']:.0f}" if "peak_rss_mb" in x else "-",
                         f"{ratio:.2f}x" if ratio is not None else ""])
    if rows:
        print("Training step (fwd + bwd + AdamW, fp32), medians of alternating repetitions")
        print(table(rows, ["preset", "batch", "impl", "tokens/s", "GFLOP/s", "MFU", "peak RSS MB", "ours/theirs"]))
        print()

    sft_cases = [] if not wanted("sft") else \
        [("book", 16, 256)] if args.quick else [("minimind2-small", 4, 512), ("book", 16, 256)]
    rows = []
    results["sft_train"] = []
    for preset, b, t in sft_cases:
        r = bench_sft_train(preset, b, t, repeats=3 if args.quick else 5)
        results["sft_train"].append(r)
        for name in ("ours", "ours, every logit", "transformers"):
            mine = name == "ours"
            rows.append([preset, r["batch"], name, f"{r[name]['tokens_per_s']:.0f}",
                         f"{r['ratio']:.2f}x" if mine else "", f"{r['ratio_every_logit']:.2f}x" if mine else ""])
    if rows:
        print("SFT training step (fwd + bwd + AdamW, fp32): the first half of each sequence is prompt, no target")
        print(table(rows, ["preset", "batch", "impl", "tokens/s", "ours/theirs", "ours/every logit"]))
        print()

    gen_cases = [] if not wanted("generate") else \
        [("book", 1)] if args.quick else [("minimind2-small", 1), ("book", 1), ("minimind2-small", 8)]
    rows = []
    results["generate"] = []
    for preset, b in gen_cases:
        r = bench_generate(preset, batch_size=b, repeats=2 if args.quick else 3)
        results["generate"].append(r)
        for name in ("ours", "transformers"):
            rows.append([preset, b, name, f"{r[name]['tokens_per_s']:.0f}",
                         f"{r['ratio']:.2f}x" if name == "ours" else ""])
    if rows:
        print("Greedy generation: 200 new tokens from a 16-token prompt")
        print(table(rows, ["preset", "batch", "impl", "tokens/s", "ours/theirs"]))
        print()

    fast_cases = [] if not wanted("fast") else [("book-teacher", "book", 1)] if args.quick else \
        [("minimind2-small", "book", 1), ("minimind2-small", "book", 8)]
    rows = []
    results["fast_generate"] = []
    # llama.cpp's file carries the book tokenizer, so with llama-cpp-python installed every row of
    # the table uses its vocabulary (one set of weights for all the contenders)
    fast_vocab = None
    if fast_cases and llama_cpp_available():
        from minimind.zoo import tokenizer as book_tokenizer

        fast_vocab = book_tokenizer().vocab_size
    for preset, draft, b in fast_cases:
        r = bench_fast_generate(preset, draft, new_tokens=16 if args.quick else args.fast_tokens, batch_size=b,
                                repeats=2 if args.quick else 3, vocab_size=fast_vocab)
        results["fast_generate"].append(r)
        for name in ("fp32", "int8", "speculative", "int8+speculative", "speculative, early exit", "transformers",
                     "llama.cpp f16", "llama.cpp q8_0"):
            if name not in r:
                continue
            x = r[name]
            rows.append([preset, b, name, f"{x['tokens_per_s']:.0f}", f"{x['vs_fp32']:.2f}x",
                         f"{x['acceptance_rate']:.0%}" if "acceptance_rate" in x else "",
                         f"{x['tokens_per_target_forward']:.2f}" if "tokens_per_target_forward" in x else "",
                         f"{r['int8_greedy_agreement']:.0%}" if name == "int8" else
                         f"{x['greedy_agreement']:.0%}" if "greedy_agreement" in x else ""])
    if rows:
        print(f"Fast inference, greedy, {16 if args.quick else args.fast_tokens} new tokens from a 16-token prompt; "
              f"draft: a random-init `{fast_cases[0][1]}` with the target's vocabulary (early exit: the target's "
              "first layer), 4 tokens per round")
        vocab = results["fast_generate"][0]["vocab_size"]
        print(f"(vocabulary {vocab}; llama.cpp rows: the same weights exported as GGUF, when llama-cpp-python is "
              "installed)")
        print(table(rows, ["preset", "batch", "impl", "tokens/s", "vs fp32", "accepted", "tokens/fwd",
                           "= fp32 tokens"]))
        print()

    times_file = ROOT / "book" / "chapter_times.json"  # written by scripts/chapter_times.py
    if times_file.exists():
        for device, run in json.loads(times_file.read_text()).get("runs", {}).items():
            results.setdefault("chapters", {})[device] = run
            rows = [[name, f"{c['standalone_seconds']:.0f}" if "standalone_seconds" in c else "-",
                     f"{c['in_order_seconds']:.0f}" if "in_order_seconds" in c else "-"]
                    for name, c in sorted(run.get("chapters", {}).items())]
            print(f"The book under nbval on {device} ({run.get('machine', {}).get('cpu', 'unknown machine')})")
            print(table(rows, ["chapter", "standalone s", "in order s"]))
            print()

    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
