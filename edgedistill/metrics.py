"""Sample-based metrics shared by training (dev evaluation) and the eval stage."""
from __future__ import annotations

from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n >= k samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k).

    Not "any of the first k", which is noisier and depends on the sample order."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)
