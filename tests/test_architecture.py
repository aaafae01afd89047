"""The package's shape: its import contracts (pyproject.toml, [tool.importlinter]) hold, and they
would catch an upward import or a cycle. import-linter reads every import statement, those inside
functions too, so a lazy import cannot hide a dependency that points the wrong way."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minimind.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(REPO_ROOT is None, reason="needs the repository (pyproject.toml)")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    command = Path(sys.executable).parent / "lint-imports"
    if not command.exists():
        command = shutil.which("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}  # the package found first is the one in `root`
    return subprocess.run([str(command), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_import_contract_holds():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory):
    """A copy of the package and its contracts, to break on purpose."""
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(REPO_ROOT / "minimind", root / "minimind", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("module, back_import, contract", [
    # the model fetching a zoo artefact: a floor importing from a floor above it, inside a function
    ("model.py", "def _upward():\n    from minimind import zoo  # noqa: F401\n", "minimind's floors"),
    # the tokenizer reading the synthetic data again (one of the cycles issue #17 removed)
    ("tokenizer.py", "def _upward():\n    from minimind.data.synthetic import dataset_path  # noqa: F401\n",
     "minimind's floors"),
    # two modules of one floor that must stay independent
    ("serve.py", "from minimind import chat  # noqa: F401\n", "minimind's floors"),
    # a cycle inside a package: the metrics record importing the loop that writes it
    ("train/metrics.py", "def _cycle():\n    from minimind.train import loop  # noqa: F401\n", "no import cycles"),
])
def test_a_back_import_breaks_a_contract(package_copy, module, back_import, contract):
    path = package_copy / "minimind" / module
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(original + "\n\n" + back_import, encoding="utf-8")
        result = lint_imports(package_copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout
