"""The `minimind` command: one entry point dispatching to each module's own `main(argv)`.

    minimind tokenizer …          train a byte-level BPE tokenizer (= minimind train tokenizer)
    minimind train <stage> …      tokenizer | pretrain | sft | dpo | lora | reason | distill | rl
    minimind chat …               interactive or one-shot chat with a checkpoint
    minimind serve …              OpenAI-compatible HTTP server (127.0.0.1:8998)
    minimind web …                Streamlit web demo
    minimind export …             transformers folder or GGUF (+ Ollama Modelfile)
    minimind eval …               book suites, bits per byte, lm-evaluation-harness tasks
    minimind data …               prepare corpora: clean, dedup, convert, stats, pipeline
    minimind synthetic …          regenerate the book's synthetic datasets
    minimind zoo build …          build the book's artefacts ahead of the chapters (--jobs N)
"""
import importlib
import sys

from minimind.commandline import run_main

COMMANDS = {
    "tokenizer": "minimind.train.tokenizer",
    "chat": "minimind.chat",
    "serve": "minimind.serve",
    "web": "minimind.web",
    "export": "minimind.export.__main__",
    "eval": "minimind.eval.__main__",
    "data": "minimind.data.prepare",
    "synthetic": "minimind.data.synthetic",
    "zoo": "minimind.zoo",
}
STAGES = ("tokenizer", "pretrain", "sft", "dpo", "lora", "reason", "distill", "rl")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        if not rest or rest[0] not in STAGES:
            print(f"usage: minimind train {{{','.join(STAGES)}}} [options]", file=sys.stderr)
            return 2
        module_name, rest = f"minimind.train.{rest[0]}", rest[1:]
    elif command in COMMANDS:
        module_name = COMMANDS[command]
    else:
        print(f"minimind: unknown command {command!r}; run `minimind --help`", file=sys.stderr)
        return 2
    return run_main(f"minimind {command}", importlib.import_module(module_name).main, rest)


if __name__ == "__main__":
    sys.exit(main())
