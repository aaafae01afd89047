"""What every command of the package shares: one spelling of each flag, and one way to report a
user's mistake.

A flag is spelled as the Python name it sets, `--max_seq_len` (the training commands generate
their flags from their config dataclasses' fields, so the flag, the field and the key in
`train_config.json` are one name); every command also accepts the same flag with dashes
(`--max-seq-len`), as many tools spell them. Torch-free, so the data tools can use it.
"""
import argparse
import sys

# What a command reports in one line instead of a traceback: problems with its input files,
# options or the disk (every such error of the package names the file or the option), and a
# training run whose loss stopped being finite. Anything else is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError, FloatingPointError)


def other_spelling(flag: str) -> str:
    """`--max_seq_len` ↔ `--max-seq-len` (a flag without `_` or `-` inside is its own other spelling)."""
    name = flag[2:]
    return "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let `parser` (and its sub-commands) also accept every long flag in its other spelling. Help
    shows the flag as it was declared; the other spelling is an alias, matched exactly."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                accept_both_spellings(sub)
        for flag in action.option_strings:
            if flag.startswith("--") and len(flag) > 2:
                parser._option_string_actions.setdefault(other_spelling(flag), action)
    return parser


class BooleanFlag(argparse.BooleanOptionalAction):
    """`--flag` sets True, `--no_flag` False (argparse's BooleanOptionalAction spelled as the package
    spells flags; `--no-flag` is accepted too, once `accept_both_spellings` has run)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.option_strings = ["--no_" + flag[5:] if flag.startswith("--no-") else flag for flag in self.option_strings]

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, not (option_string or "").startswith(("--no_", "--no-")))


def run_main(prog: str, main, argv=None) -> int:
    """`main(argv)`'s exit status; a USER_ERRORS exception is printed as `prog: message`, status 2."""
    try:
        result = main(argv)
    except USER_ERRORS as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    return 0 if result is None else int(result)
