"""Self-checks for chapter 11 (evaluation): the Wilson interval of a share."""
import math


def check_wilson_interval(fn) -> None:
    """fn(successes, n, z=1.96) -> (low, high): the Wilson score interval of successes / n."""
    z = 1.959963984540054
    for successes, n in ((0, 10), (3, 10), (50, 100), (97, 100), (200, 200), (1, 1)):
        p = successes / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        want = (max(0.0, centre - half), min(1.0, centre + half))
        low, high = fn(successes, n, z)
        if successes in (0, n) and abs(low - high) < 1e-12:
            raise AssertionError(f"{successes}/{n}: the interval collapsed to a point; that is the normal "
                                 "approximation p ± z·sqrt(p(1-p)/n), which the Wilson interval fixes")
        wald = (p - z * math.sqrt(p * (1 - p) / n), p + z * math.sqrt(p * (1 - p) / n))
        if 0 < successes < n and all(abs(a - b) < 1e-9 for a, b in zip((low, high), wald)):
            raise AssertionError("that is the normal (Wald) interval; centre it at (p + z²/2n)/(1 + z²/n)")
        assert abs(low - want[0]) < 1e-6 and abs(high - want[1]) < 1e-6, (
            f"{successes}/{n}: expected ({want[0]:.4f}, {want[1]:.4f}), got ({low:.4f}, {high:.4f})")
        assert 0.0 <= low <= p <= high <= 1.0, "the interval must hold the share and stay inside [0, 1]"
    print("✓ Wilson interval: centred towards 1/2, inside [0, 1], never a point at 0% or 100%")
