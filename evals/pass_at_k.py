"""pass@k, the metric of paper §3: the unbiased estimator of Chen et al. 2021 (the HumanEval paper, §2.1)."""

import math
from collections import Counter
from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that at least one of k samples, drawn without replacement from n of which c pass, passes:
    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the binomials."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], ks: Sequence[int] = (1, 10, 100)) -> dict[str, float]:
    """{"pass@k": the mean over tasks} from each task's (samples n, passed c), for the k in `ks` that every task
    has enough samples for (k <= the smallest n)."""
    if not counts:
        return {}
    fewest = min(n for n, _ in counts)
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks if k <= fewest}


def summarize(rows: Sequence[dict]) -> dict:
    """The summary of graded rows ({"task_id", "passed", ...}, one per sample): pass@k as `mean_pass_at_k`, and
    the counts of problems, samples and passes."""
    attempts, passes = Counter(), Counter()
    for row in rows:
        attempts[row["task_id"]] += 1
        passes[row["task_id"]] += row["passed"]
    return {
        **mean_pass_at_k([(attempts[task_id], passes[task_id]) for task_id in attempts]),
        "problems": len(attempts),
        "samples": len(rows),
        "passed": sum(passes.values()),
    }
