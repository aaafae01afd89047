"""Keep the chapters' kernels independent of what the unit tests import.

nbval starts each chapter's kernel from this pytest process, so the kernel inherits its
environment. Importing Streamlit (tests/test_web.py) sets MPLBACKEND=Agg, after which
`plt.show()` in a kernel displays nothing and every plotting cell would differ from its
stored output. Restore the variable before every test item.
"""
import os

import pytest

_ORIGINAL_MPLBACKEND = os.environ.get("MPLBACKEND")


def _restore_environment():
    if _ORIGINAL_MPLBACKEND is None:
        os.environ.pop("MPLBACKEND", None)
    else:
        os.environ["MPLBACKEND"] = _ORIGINAL_MPLBACKEND


def pytest_collection_finish(session):
    _restore_environment()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _restore_environment()
