"""Fail when a chapter notebook does not match its jupytext source (the .py is the truth).

Compares cell types, sources and tags: outputs are checked by nbval, not here.
Usage: python scripts/check_sync.py chapters/01_tokenizer.py [...]
"""
import sys
from pathlib import Path

import jupytext
import nbformat


def cells(nb):
    # tags too: `nbval-check-output` decides which stored outputs nbval compares
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def main(paths):
    bad = []
    for py in map(Path, paths):
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists():
            bad.append(f"{ipynb}: missing (run `make notebooks`)")
            continue
        expected = cells(jupytext.read(py))
        stored = cells(nbformat.read(ipynb, as_version=4))
        if expected != stored:
            n = next((i for i, (a, b) in enumerate(zip(expected, stored)) if a != b), min(len(expected), len(stored)))
            bad.append(f"{ipynb}: out of sync with {py.name} from cell {n} (run `make notebooks`)")
        nb = nbformat.read(ipynb, as_version=4)
        unexecuted = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
        if unexecuted:
            bad.append(f"{ipynb}: code cells {unexecuted[:5]} have no stored outputs (run `make notebooks`)")
    for line in bad:
        print(line, file=sys.stderr)
    print(f"check-sync: {len(paths) - len({b.split(':')[0] for b in bad})}/{len(paths)} chapters in sync")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
