"""Reading and generating the book's datasets.

`minimind.data.jsonl` reads jsonl files (upstream MiniMind's and the book's) with errors that
name the file and the line; `minimind.data.synthetic` generates the deterministic bilingual
world every chapter trains on.
"""
from minimind.data.jsonl import DataError, JsonlReport, read_jsonl

__all__ = ["DataError", "JsonlReport", "read_jsonl"]
