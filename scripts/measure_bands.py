"""Measure how far the chapters' float figures move across seeds and kernel paths; write the bands.

    python scripts/measure_bands.py                          # every chapter, seeds 0 1 2 × kernels native default
    python scripts/measure_bands.py chapters/08_reasoning.ipynb --seeds 0 1 2 --kernels native mkl-avx2
    python scripts/measure_bands.py --runs 0:native 1:native 2:native 0:default 1:mkl-avx2 2:threads2
    python scripts/measure_bands.py --aggregate-only         # rebuild bands.json from the records kept
    python scripts/measure_bands.py --runs 0:native --machine xeon --keep   # add another machine's run

Each run (one seed × one kernel path) executes the chapters in reading order with nbconvert —
the stored notebooks are left untouched — in a cache of its own, with `MINIMIND_SEED` and the
kernel path's environment set and `MINIMIND_BANDS_RECORD` pointing at a record file, so every
`minimind.checks.bands.expect(...)` call records its figure instead of asserting it. Two runs go
at a time (one per core; the chapters use one thread each). Then every figure's values are
turned into a band (`minimind.checks.bands.derive_band`) and written to
`minimind/checks/bands.json`, with the values of each run, so the spread each band came from is
on record. Measuring some chapters replaces only their figures.

Kernel paths: `native` (what the CPU offers), `default` (`ATEN_CPU_CAPABILITY=default`: torch's
scalar kernels), `avx2` (`ATEN_CPU_CAPABILITY=avx2`), `mkl-avx2` (`MKL_ENABLE_INSTRUCTIONS=AVX2`:
MKL's AVX2 code path for matrix products), `avx2-only` (both: an AVX2-only CPU's results on a newer one), `mkl-compatible` (`MKL_CBWR=COMPATIBLE`), `threads2` (two
threads instead of one: another order of the sums, as on a learner's two-core run).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from chapter_times import chapters_in_reading_order  # noqa: E402
from minimind.checks.bands import BANDS_FILE, derive_band  # noqa: E402

KERNELS = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    # what an AVX2-only x86 CPU computes, on a newer one: torch's AVX2 kernels and MKL's AVX2 path
    # (reproduces the AVX2 EPYC that recorded the stored chapters bit for bit on an AVX-512 EPYC)
    "avx2-only": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    "threads2": {"MINIMIND_THREADS": "2"},  # a learner's 2-core run (the others use one thread each)
}
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MINIMIND_THREADS")


def run_label(seed: int, kernel: str, machine: str = "") -> str:
    return f"seed{seed}-{kernel}" + (f"-{machine}" if machine else "")


def execute_run(seed: int, kernel: str, chapters: list, work: Path, machine: str = "") -> tuple:
    """Execute `chapters` in order under one seed and kernel path; returns (label, seconds, failures)."""
    label = run_label(seed, kernel, machine)
    folder = work / label
    (folder / "notebooks").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    env["MINIMIND_THREADS"] = "1"  # two runs at a time, one per core
    env.update(KERNELS[kernel])
    env.update(MINIMIND_SEED=str(seed), MINIMIND_CACHE=str(folder / "cache"), MINIMIND_BANDS_RUN=label,
               PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
    failures, start = [], time.time()
    for notebook in chapters:
        record = folder / f"{notebook.stem}.jsonl"
        record.unlink(missing_ok=True)  # a chapter measured again replaces its earlier record
        env["MINIMIND_BANDS_RECORD"] = str(record)
        began = time.time()
        # every cell runs, also after one that fails (a claim that does not hold in this run), so
        # the figures of the cells after it are recorded too; the failing cells are reported
        done = subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
             "--ExecutePreprocessor.timeout=1800", "--output-dir", str(folder / "notebooks"), str(notebook)],
            cwd=REPO / "chapters", env=env, capture_output=True, text=True)
        errors = _failed_cells(folder / "notebooks" / notebook.name) if done.returncode == 0 else ["nbconvert"]
        status = "ok" if not errors else f"FAILED ({', '.join(errors)})"
        print(f"[{label}] {notebook.name}: {status} in {time.time() - began:.0f} s", flush=True)
        if errors:
            failures.append(notebook.name)
            (folder / f"{notebook.stem}.error.txt").write_text(done.stderr[-20000:] + _error_text(
                folder / "notebooks" / notebook.name))
    return label, time.time() - start, failures


def _error_outputs(notebook: Path):
    if not notebook.exists():
        return []
    cells = json.loads(notebook.read_text())["cells"]
    return [(index, output) for index, cell in enumerate(cells) if cell["cell_type"] == "code"
            for output in cell.get("outputs", []) if output.get("output_type") == "error"]


def _failed_cells(notebook: Path) -> list:
    return [f"cell {index}: {output['ename']}" for index, output in _error_outputs(notebook)]


def _error_text(notebook: Path) -> str:
    return "".join(f"\n--- cell {index}: {output['ename']}: {output['evalue']}\n" for index, output in
                   _error_outputs(notebook))


def aggregate(work: Path, labels: list, chapters: list, keep: bool = False) -> dict:
    """Merge the records of `labels` for `chapters` into bands.json (other chapters' bands stay).
    keep: also keep the values bands.json holds from earlier runs (other machines' runs, whose
    records are not on this one); a label measured again replaces its kept values."""
    existing = json.loads(BANDS_FILE.read_text()) if BANDS_FILE.exists() else {"bands": {}, "measurements": {}}
    stems = {notebook.stem for notebook in chapters}
    values, sizes, owner = {}, {}, {}
    kept_runs = {}
    if keep:
        for name, band in existing["bands"].items():
            if band.get("chapter") in stems:
                values[name] = {run: value for run, value in band["values"].items() if run not in labels}
                sizes[name], owner[name] = band.get("n"), band["chapter"]
        for stem in stems:
            kept_runs[stem] = [run for run in existing.get("measurements", {}).get(stem, {}).get("runs", [])
                               if run not in labels]
    for label in labels:
        for stem in stems:
            record = work / label / f"{stem}.jsonl"
            if not record.exists():
                continue
            for line in record.read_text().splitlines():
                entry = json.loads(line)
                values.setdefault(entry["name"], {})[label] = entry["value"]
                if entry["n"]:
                    sizes[entry["name"]] = entry["n"]
                owner[entry["name"]] = stem
    bands = {name: band for name, band in existing["bands"].items() if band.get("chapter") not in stems}
    for name, by_run in sorted(values.items()):
        if not by_run:  # only the runs measured again held it, and the chapter no longer records it
            continue
        derived = derive_band(name, by_run.values(), sizes.get(name))
        bands[name] = {"chapter": owner[name], "lo": derived.lo, "hi": derived.hi, "min": derived.low_seen,
                       "max": derived.high_seen, "n": sizes.get(name), "values": by_run}
    measurements = dict(existing.get("measurements", {}))
    for stem in stems:
        measured = [label for label in labels if (work / label / f"{stem}.jsonl").exists()]
        machine = f"{platform.machine()} {_cpu_model()}, {os.cpu_count()} cores"
        earlier = existing.get("measurements", {}).get(stem, {}).get("machine", "") if keep else ""
        machines = [m for m in earlier.split("; ") if m] + ([machine] if machine not in earlier.split("; ") else [])
        measurements[stem] = {
            "runs": sorted(set(measured) | set(kept_runs.get(stem, []))), "date": datetime.date.today().isoformat(),
            "machine": "; ".join(machines),
        }
    result = {
        "rule": "band = [min - pad, max + pad], pad = max(max - min, floor); floor = 2 Agresti-Coull "
                "standard errors for a proportion of n items, else 1e-3 of the mean; proportions clipped to [0, 1]",
        "measurements": dict(sorted(measurements.items())),
        "bands": dict(sorted(bands.items())),
    }
    BANDS_FILE.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter notebooks (default: all, in reading order)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--kernels", nargs="+", default=["native", "default"], choices=sorted(KERNELS))
    parser.add_argument("--runs", nargs="+", metavar="SEED:KERNEL",
                        help="explicit runs instead of every seed with every kernel, e.g. 0:native 1:native 0:default")
    parser.add_argument("--work", default=str(REPO / ".cache" / "bands"), help="runs' caches, records and notebooks")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild bands.json from kept records")
    parser.add_argument("--machine", default="", help="a name for this machine, appended to the run labels "
                        "(e.g. xeon), so runs on several machines are kept apart")
    parser.add_argument("--keep", action="store_true", help="add these runs to the values bands.json already "
                        "holds (runs made elsewhere) instead of deriving the bands from these runs alone")
    args = parser.parse_args(argv)

    order = chapters_in_reading_order()
    chosen = [Path(c).resolve() for c in args.chapters] or order
    chapters = [notebook for notebook in order if notebook in chosen]  # reading order: artefacts build first
    work = Path(args.work)
    runs = [(seed, kernel) for seed in args.seeds for kernel in args.kernels]
    if args.runs:
        runs = [(int(run.split(":")[0]), run.split(":")[1]) for run in args.runs]
        unknown = {kernel for _, kernel in runs} - set(KERNELS)
        if unknown:
            parser.error(f"unknown kernel path(s) {sorted(unknown)}; choose from {sorted(KERNELS)}")
    labels = [run_label(seed, kernel, args.machine) for seed, kernel in runs]
    if not args.aggregate_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda run: execute_run(*run, chapters, work, args.machine), runs))
        for label, seconds, failures in results:
            print(f"{label}: {seconds / 60:.1f} min" + (f", FAILED: {', '.join(failures)}" if failures else ""))
        if any(failures for _, _, failures in results):
            print("some chapters failed; their records are incomplete (see the .error.txt files)")
            return 1
    result = aggregate(work, labels, chapters, keep=args.keep)
    stems = {notebook.stem for notebook in chapters}
    for name, entry in result["bands"].items():
        if entry["chapter"] in stems:
            print(f"{name:<48} band [{entry['lo']:.4g}, {entry['hi']:.4g}]  runs {entry['min']:.4g}…{entry['max']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
