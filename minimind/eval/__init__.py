"""Measuring a model honestly, in one place: scoring replies (`scoring`: exact match, styles,
reasoning format), generating the replies to score (`replies`: greedy, batched), the book's
held-out suites with 95% intervals (`suites`), bits per byte on any text (`bpb`), and any
lm-evaluation-harness task through the "minimind" lm-eval model (`harness`).

    minimind eval --model sft --suites facts,identity --out results.json     # or python -m minimind.eval
    minimind eval --model out/pretrain --bpb data/pretrain_val.jsonl
    minimind eval --model CKPT --lm_eval_tasks ceval-valid,cmmlu,arc_easy    # needs the datasets (network)

`minimind.eval.harness` (the lm-eval adapter, `MiniMindLM`) is imported on demand: it needs
lm-eval, which `import minimind.eval` does not load.
"""
from minimind.eval.bpb import BitsPerByte, bits_per_byte, read_documents, sliding_windows
from minimind.eval.replies import answer_questions, exact_match, generate_replies, greedy_replies
from minimind.scoring import (ReasoningScore, is_correct, is_minimind_identity, normalize_answer, normalize_reply,
                                   parse_reasoning, reply_style, score_answers)
from minimind.eval.suites import SUITES, Score, parse_suites, run_suites, subset, wilson_interval

__all__ = ["BitsPerByte", "bits_per_byte", "read_documents", "sliding_windows",
           "answer_questions", "exact_match", "generate_replies", "greedy_replies",
           "ReasoningScore", "is_correct", "is_minimind_identity", "normalize_answer", "normalize_reply",
           "parse_reasoning", "reply_style", "score_answers",
           "SUITES", "Score", "parse_suites", "run_suites", "subset", "wilson_interval"]
