"""Colab that provably works: a chapter runs top to bottom where `minimind` is not installed.

Colab opens a chapter's .ipynb with PyTorch and Jupyter present but without this package.
The chapter's first code cell then installs the package from `MINIMIND_SOURCE` (default: the
git repository named in _config.yml), and the chapter generates the synthetic data it needs.
This test recreates that situation outside the checkout:

1. a wheel is built from the repository's files (the stand-in for the git repository);
2. a clean virtual environment is made in a temporary folder. So that torch and friends are
   not installed again, it sees this venv's site-packages through a folder of links to every
   entry *except* minimind's (a plain `.pth` path line would not run the editable-install
   finder anyway, but the dist-info would make pip think minimind is installed); the test
   first proves `import minimind` fails there;
3. the chapter notebook is executed top to bottom in a kernel of that clean venv, with
   `MINIMIND_SOURCE` set to the wheel, an empty artefact cache, no package index
   (`PIP_NO_INDEX=1`: nothing may be downloaded) and a working folder outside the checkout;
4. a cell appended to the executed copy proves `minimind` then came from the wheel.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
CHAPTER = REPO / "chapters" / "01_tokenizer.ipynb"  # the chapter the test executes
BOOTSTRAP_CELL = '''\
# Installs the package only where it is missing (Colab, a fresh environment); does nothing in the book's own venv.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("minimind") is None:
    source = os.environ.get("MINIMIND_SOURCE", "git+https://github.com/minimind-book/minimind-book")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)'''
PROOF_CELL = '''\
import importlib.metadata, json, sys
import minimind
print("PROOF " + json.dumps({"minimind_file": minimind.__file__, "executable": sys.executable,
                             "direct_url": importlib.metadata.distribution("minimind").read_text("direct_url.json")}))'''
RUNNER = '''\
import sys
import nbformat
from nbclient import NotebookClient
source, target, kernel, workdir = sys.argv[1:5]
nb = nbformat.read(source, as_version=4)
NotebookClient(nb, kernel_name=kernel, timeout=1200, resources={"metadata": {"path": workdir}}).execute()
nbformat.write(nb, target)
'''


def chapter_notebooks() -> list[Path]:
    return sorted((REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("notebook", chapter_notebooks(), ids=lambda p: p.stem)
def test_chapter_starts_with_the_colab_bootstrap_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    first_code = next((c for c in nb.cells if c.cell_type == "code"), None)
    assert first_code is not None and first_code.source.strip() == BOOTSTRAP_CELL, (
        f"{notebook.name}: the first code cell must be exactly the Colab bootstrap cell "
        "(see COMMON.md / book/setup.md)")


def test_bootstrap_installs_from_the_repository_named_in_the_book_config():
    import yaml

    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert f'"git+{url}"' in BOOTSTRAP_CELL, f"the bootstrap cell must install from {url} (_config.yml)"


def _run(command, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the package, built from a copy of the repository's package files."""
    source = out_dir / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "minimind", source / "minimind",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    wheels = out_dir / "wheels"
    result = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                   "-w", str(wheels), str(source)])
    assert result.returncode == 0, f"building the wheel failed:\n{result.stdout}{result.stderr}"
    (wheel,) = wheels.glob("minimind-*.whl")
    return wheel


def make_clean_venv(root: Path) -> Path:
    """A venv that sees this venv's packages except minimind; returns its python."""
    base_python = getattr(sys, "_base_executable", sys.executable)
    venv = root / "venv"
    result = _run([base_python, "-m", "venv", "--without-pip", str(venv)])
    assert result.returncode == 0, result.stderr
    view = root / "site-packages-without-minimind"
    view.mkdir()
    here = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    for site_dir in here:
        for entry in site_dir.iterdir():
            if "minimind" not in entry.name.lower() and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(purelib, "book-test-shared-packages.pth").write_text(f"{view}\n")
    return python


def clean_environment(root: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINIMIND_", "PYTHON", "VIRTUAL_ENV", "JUPYTER", "MPLBACKEND"))}
    home = root / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), MINIMIND_CACHE=str(root / "cache"), PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONHASHSEED="0", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def execute_in_clean_venv(notebook: Path, root: Path) -> dict:
    """Run `notebook` where minimind is missing and must come from a wheel; return the proof cell's record."""
    wheel = build_wheel(root)
    python = make_clean_venv(root)
    workdir = root / "work"
    workdir.mkdir()
    env = clean_environment(root)

    missing = _run([str(python), "-c", "import minimind"], cwd=workdir, env=env)
    assert missing.returncode != 0 and "No module named 'minimind'" in missing.stderr, (
        f"minimind must not be importable in the clean venv before the bootstrap runs:\n{missing.stderr}")
    present = _run([str(python), "-c", "import torch, nbclient, ipykernel, tokenizers"], cwd=workdir, env=env)
    assert present.returncode == 0, f"the clean venv does not see the shared packages:\n{present.stderr}"

    kernel_dir = root / "jupyter" / "kernels" / "clean-venv"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "clean venv", "language": "python"}))
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROOF_CELL))
    source, executed = workdir / notebook.name, workdir / f"executed_{notebook.name}"
    nbformat.write(nb, source)
    (root / "runner.py").write_text(RUNNER)
    run_env = clean_environment(root, MINIMIND_SOURCE=str(wheel), JUPYTER_PATH=str(root / "jupyter"))
    result = _run([str(python), str(root / "runner.py"), str(source), str(executed), "clean-venv", str(workdir)],
                  cwd=workdir, env=run_env, timeout=1800)
    assert result.returncode == 0, (f"{notebook.name} failed in the clean venv:\n"
                                    f"{(result.stdout + result.stderr)[-6000:]}")
    outputs = nbformat.read(executed, as_version=4).cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    proof = json.loads(text.split("PROOF ", 1)[1])
    proof["wheel"], proof["python"], proof["venv"] = str(wheel), str(python), str(root / "venv")
    return proof


def test_chapter_runs_in_a_clean_venv_that_installs_the_package_from_a_wheel(tmp_path):
    assert CHAPTER.exists(), f"{CHAPTER.relative_to(REPO)} is missing"
    proof = execute_in_clean_venv(CHAPTER, tmp_path)
    assert proof["executable"] == proof["python"], proof  # the kernel ran the clean venv's python
    assert proof["minimind_file"].startswith(proof["venv"]), (
        f"minimind was imported from {proof['minimind_file']}, not from the clean venv")
    assert Path(proof["wheel"]).as_uri() in proof["direct_url"], (
        f"minimind was not installed from MINIMIND_SOURCE: {proof['direct_url']}")
