"""Chapter 11's self-check accepts the Wilson interval and rejects the usual mistakes."""
import math

import pytest

from minimind.checks.evaluation import check_wilson_interval
from minimind.eval import wilson_interval


def test_the_package_interval_passes(capsys):
    check_wilson_interval(wilson_interval)
    assert "✓" in capsys.readouterr().out


def wald(successes, n, z=1.96):
    p = successes / n
    half = z * math.sqrt(p * (1 - p) / n)
    return max(0.0, p - half), min(1.0, p + half)


def wilson_around_p(successes, n, z=1.96):  # the right width, centred on p instead of the Wilson centre
    p = successes / n
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, p - half), min(1.0, p + half)


@pytest.mark.parametrize("wrong", [wald, wilson_around_p])
def test_typical_mistakes_fail(wrong):
    with pytest.raises(AssertionError):
        check_wilson_interval(wrong)
