"""What a run depends on besides its config: the replicate seed the book's measurements vary."""
import os

REPLICA_STRIDE = 1000


def replica_seed(seed: int) -> int:
    """`seed`, or under ``MINIMIND_SEED=s`` the seed of the s-th replicate run: ``seed + 1000·s``.

    The book's figures are measured under several replicates (scripts/measure_bands.py) to learn
    how far they move when nothing but the random draws changes; unset, every run keeps its own
    seed and the stored outputs reproduce."""
    return seed + REPLICA_STRIDE * int(os.environ.get("MINIMIND_SEED", "0"))
