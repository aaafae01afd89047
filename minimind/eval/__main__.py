"""`minimind eval` (= `python -m minimind.eval`): evaluate one checkpoint on the book's held-out
suites, on bits per byte of a text file, and on any lm-evaluation-harness task; print each
figure and write them all to a JSON file.

    minimind eval --model sft --suites all --out sft.json
    minimind eval --model dpo --suites preference --limit 60
    minimind eval --model out/pretrain --bpb data/pretrain_val.jsonl
    minimind eval --model MiniMind2-Small.pth --tokenizer minimind2_tokenizer --lm_eval_tasks ceval-valid,cmmlu
    minimind eval --model CKPT --lm_eval_tasks minimind_facts_mc --lm_eval_include_path tests/lm_eval_tasks

--model takes what `minimind chat` takes (a checkpoint folder, an upstream `.pth`, a transformers
folder, or a zoo name). Bad input (an unknown suite or task, a checkpoint that does not load, a
task whose dataset needs the network while offline) ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from minimind.commandline import accept_both_spellings
from minimind.inference import add_model_flags

PROG = "minimind eval"


class EvalInputError(ValueError):
    """Input the command cannot evaluate; its message is the one line the user sees."""


def build_parser() -> argparse.ArgumentParser:
    from minimind.eval.suites import SUITES

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(parser, lora=False, dtype="float32")  # log-probabilities are always taken in fp32
    parser.add_argument("--suites", default=None, metavar="LIST",
                        help=f"comma-separated book suites: {', '.join(SUITES)}, or all")
    parser.add_argument("--lm_eval_tasks", default=None, metavar="LIST",
                        help="comma-separated lm-evaluation-harness tasks or groups (e.g. ceval-valid,cmmlu,arc_easy)")
    parser.add_argument("--lm_eval_include_path", default=None, metavar="DIR",
                        help="a folder of lm-eval task YAMLs, searched before the built-in tasks")
    parser.add_argument("--num_fewshot", type=int, default=None, help="lm-eval: examples in each prompt (default: the task's)")
    parser.add_argument("--batch_size", type=int, default=16, help="lm-eval: requests per forward pass")
    parser.add_argument("--bpb", default=None, metavar="FILE",
                        help="bits per byte of a text file (.jsonl: one document per row's 'text'; else the whole file)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most N items per suite group, per lm-eval task, and documents of --bpb")
    parser.add_argument("--out", default=None, metavar="FILE", help="write every figure to this JSON file")
    return accept_both_spellings(parser)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _resolve_lm_eval_tasks(args):
    """(task manager, loaded tasks) for --lm_eval_tasks, before the model is loaded."""
    try:
        from minimind.eval import harness
    except ImportError as error:
        raise EvalInputError(f"--lm_eval_tasks needs lm-eval ({_first_line(error)}); "
                             "pip install lm-eval==0.4.13") from None
    names = [name.strip() for name in args.lm_eval_tasks.split(",") if name.strip()]
    if not names:
        raise EvalInputError("--lm_eval_tasks: no task names given")
    try:
        manager = harness.task_manager(names, args.lm_eval_include_path)
        return manager, harness.load_tasks(names, manager)
    except harness.LMEvalTaskError as error:
        raise EvalInputError(str(error)) from None


def _load_model(args):
    from minimind.inference import load_chat_model

    try:
        return load_chat_model(args.model, args.tokenizer, (), args.preset, args.device, args.dtype)
    except Exception as error:  # the loaders raise many kinds (missing file, bad layout, corrupt bytes)
        raise EvalInputError(f"cannot load checkpoint {args.model!r}: {_first_line(error)}") from None


def run(args) -> dict:
    """Evaluate as `args` asks; returns the report that --out writes."""
    from minimind.eval.bpb import bits_per_byte, read_documents
    from minimind.eval.suites import parse_suites, run_suites

    if not (args.suites or args.lm_eval_tasks or args.bpb):
        raise EvalInputError("nothing to evaluate: give --suites, --lm_eval_tasks and/or --bpb")
    if args.limit is not None and args.limit < 1:
        raise EvalInputError(f"--limit must be at least 1, got {args.limit}")
    # check every input before the (possibly slow) model load
    try:
        suites = parse_suites(args.suites) if args.suites else []
        documents = read_documents(args.bpb, args.limit) if args.bpb else None
    except (ValueError, FileNotFoundError) as error:
        raise EvalInputError(_first_line(error)) from None
    lm_eval_tasks = _resolve_lm_eval_tasks(args) if args.lm_eval_tasks else None

    model, tokenizer = _load_model(args)
    weight = next(model.parameters())
    print(f"model {args.model} ({model.num_parameters() / 1e6:.2f}M parameters) on {weight.device} in "
          f"{str(weight.dtype).removeprefix('torch.')}", file=sys.stderr)
    report: dict = {"model": str(args.model), "parameters": model.num_parameters()}

    if suites:
        scores = run_suites(model, tokenizer, suites, limit=args.limit)
        print(f"{'suite':<11} {'group':<9} {'metric':<9} {'share':>6}  95% interval")
        for score in scores:
            print(score)
        report["suites"] = [score.to_dict() for score in scores]
    if documents is not None:
        try:
            result = bits_per_byte(model, tokenizer, documents)
        except ValueError as error:
            raise EvalInputError(f"--bpb {args.bpb}: {_first_line(error)}") from None
        print(f"bits per byte of {args.bpb}: {result.bits_per_byte:.4f} ({result.documents} documents, "
              f"{result.bytes:,} bytes, {result.tokens:,} tokens, {result.bits_per_token:.4f} bits per token)")
        report["bits_per_byte"] = {"file": str(args.bpb), **result.to_dict()}
    if lm_eval_tasks is not None:
        from lm_eval.utils import make_table

        from minimind.eval.harness import MiniMindLM, evaluate_tasks

        manager, tasks = lm_eval_tasks
        lm = MiniMindLM(model=model, tokenizer=tokenizer, batch_size=args.batch_size)
        results = evaluate_tasks(lm, tasks, manager, limit=args.limit, num_fewshot=args.num_fewshot)
        print(make_table(results))
        if results.get("groups"):
            print(make_table(results, "groups"))
        report["lm_eval"] = {key: results[key] for key in ("results", "groups", "n-samples", "versions") if key in results}
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except EvalInputError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if args.out:
        from minimind.files import atomic_write

        # numpy scalars in lm-eval's results become numbers, anything else its text
        text = json.dumps(report, ensure_ascii=False, indent=2,
                          default=lambda value: value.item() if hasattr(value, "item") else str(value)) + "\n"
        atomic_write(Path(args.out), lambda temp: Path(temp).write_text(text, encoding="utf-8"))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
