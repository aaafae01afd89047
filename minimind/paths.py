"""Where things live: one root for the repository, the data and the artefact cache."""
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# In a checkout (editable install) the repository root holds pyproject.toml; in a wheel
# install (Colab) there is no repository, and data and caches go under the user's home.
_CANDIDATE_ROOT = PACKAGE_DIR.parent
REPO_ROOT = _CANDIDATE_ROOT if (_CANDIDATE_ROOT / "pyproject.toml").exists() else None


def cache_dir() -> Path:
    """Directory for trained artefacts (the zoo). `MINIMIND_CACHE` overrides it."""
    if os.environ.get("MINIMIND_CACHE"):
        path = Path(os.environ["MINIMIND_CACHE"]).expanduser()
    elif REPO_ROOT is not None:
        path = REPO_ROOT / ".cache" / "minimind"
    else:
        path = Path.home() / ".cache" / "minimind"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Directory holding the synthetic datasets: the repository's data/ in a checkout,
    else a folder in the cache (generated on demand). `MINIMIND_DATA` overrides it."""
    if os.environ.get("MINIMIND_DATA"):
        return Path(os.environ["MINIMIND_DATA"]).expanduser()
    if REPO_ROOT is not None:
        return REPO_ROOT / "data"
    return cache_dir() / "data"
