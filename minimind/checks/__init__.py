"""Self-checks for the book's exercises: each tells a student whether their code is right.

One module per chapter topic (`minimind.checks.tokenizer`, `minimind.checks.model`, …);
every check raises AssertionError with a hint on failure and prints a short success line.
"""
