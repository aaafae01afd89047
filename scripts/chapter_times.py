"""Time every chapter under nbval and record the result for the book's landing page.

    python scripts/chapter_times.py                    # this machine, label "cpu", both modes
    python scripts/chapter_times.py --label gpu        # the same on a GPU machine
    python scripts/chapter_times.py chapters/04_pretraining.ipynb --modes standalone

Each chapter is executed exactly as `make test` does (`pytest --nbval`, stored outputs
compared), in a fresh process, and its wall-clock time is recorded in two ways:

- standalone: with an empty artefact cache, as a reader who opens this one chapter in
  Colab gets it (the chapter trains whatever earlier stage it needs);
- in order: all chapters in reading order (the order of _toc.yml) sharing one cache, as a
  reader going through the book gets it.

Results are merged into book/chapter_times.json under the label, with the machine's
description and a hash of each chapter's code, so the website (book/_ext/book_site.py,
the `chapter-times` directive) can render the table and mark rows measured on an older
version of a chapter, and each chapter's "Estimated time" line (the `chapter-time` role)
can show its own measured time. Nothing in either is typed by hand.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "book" / "chapter_times.json"
MODES = ("standalone", "in_order")


def chapters_in_reading_order() -> list[Path]:
    """The chapter notebooks listed in _toc.yml, in the order a reader meets them."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    return [REPO / f"{f}.ipynb" for f in files if f.startswith("chapters/")]


def code_sha256(notebook: Path) -> str:
    """Hash of the chapter's code cells: changes exactly when what the timing measured changes."""
    nb = nbformat.read(notebook, as_version=4)
    code = "\n\x00\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def describe_machine() -> dict:
    import torch

    cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    machine = {
        "cpu": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return machine


def run_nbval(notebook: Path, cache: Path) -> tuple[float, bool, str]:
    """Execute one chapter under nbval with `cache` as its artefact cache; wall seconds, passed, log tail."""
    env = dict(os.environ, MINIMIND_CACHE=str(cache), PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
               "--nbval-sanitize-with", str(REPO / "nbval_sanitize.cfg"), "--nbval-cell-timeout", "1200",
               str(notebook.relative_to(REPO))]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, result.returncode == 0, (result.stdout + result.stderr)[-2000:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="chapters to time (default: every chapter in _toc.yml)")
    parser.add_argument("--label", default="cpu",
                        help="which column the times belong to: cpu (a CPU machine) or gpu (default: cpu)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated subset of {', '.join(MODES)} (default: both)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default: {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    ordered = chapters_in_reading_order()
    notebooks = [n.resolve() for n in args.notebooks] if args.notebooks else ordered
    missing = [str(n) for n in notebooks if not n.exists()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    # In-order timing only means something over the chapters before a chapter too.
    in_order_chapters = [n for n in ordered if n.exists()]

    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    run = results["runs"].setdefault(args.label, {"chapters": {}})
    run["machine"] = describe_machine()
    run["measured_on"] = datetime.date.today().isoformat()
    run["load_average_at_start"] = round(os.getloadavg()[0], 2)
    failures = 0

    def record(notebook: Path, mode: str, seconds: float, passed: bool, log: str) -> None:
        nonlocal failures
        entry = run["chapters"].setdefault(notebook.stem, {})
        entry[f"{mode}_seconds"] = round(seconds, 1)
        entry[f"{mode}_passed"] = passed
        entry["code_sha256"] = code_sha256(notebook)
        status = "passed" if passed else "FAILED"
        print(f"{notebook.stem:24s} {mode:10s} {seconds:8.1f} s  {status}", flush=True)
        if not passed:
            failures += 1
            print(log, file=sys.stderr)

    if "standalone" in modes:
        for notebook in notebooks:
            with tempfile.TemporaryDirectory(prefix="minimind-cache-") as cache:
                record(notebook, "standalone", *run_nbval(notebook, Path(cache)))
    if "in_order" in modes:
        with tempfile.TemporaryDirectory(prefix="minimind-cache-") as cache:
            for notebook in in_order_chapters:
                seconds, passed, log = run_nbval(notebook, Path(cache))
                if notebook in notebooks:
                    record(notebook, "in_order", seconds, passed, log)

    run["load_average_at_end"] = round(os.getloadavg()[0], 2)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
