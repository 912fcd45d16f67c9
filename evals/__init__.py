"""HumanEval, MBPP and user problem sets: generation, sandboxed execution, pass@k (paper §3)."""
