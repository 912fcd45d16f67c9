"""A Lightning callback that measures HumanEval (or MBPP, or a user set) pass@1 during `fit`.

Every `every_n_steps` optimizer steps, global rank 0 decodes each problem greedily with the training
model, grades the completions in the sandbox, and logs `eval/<benchmark>_pass@1` to the run's logger;
the other ranks wait at a barrier. Name it in the YAML under trainer.callbacks:

    - class_path: evals.callback.PassAtOneCallback
      init_args: {tokenizer: demo/data/tokenizer.json, every_n_steps: 1000, limit: 40}
"""

import lightning as L

from evals.evaluate import evaluate
from evals.generate import sample_completions
from evals.problems import load_problems
from evals.sandbox import Sandbox
from evals.time_limits import FACTOR, FLOOR, calibrate
from phi1.errors import ConfigError
from phi1.tokenizer import load_tokenizer


class PassAtOneCallback(L.Callback):
    def __init__(
        self,
        tokenizer: str,
        every_n_steps: int = 1000,
        benchmark: str = "humaneval",
        data: str | None = None,
        limit: int | None = None,
        max_new_tokens: int = 384,
        batch_size: int = 16,
        time_floor: float = FLOOR,
        time_factor: float = FACTOR,
        workers: int | None = None,
    ):
        """
        Args:
            tokenizer: the tokenizer of the training data (tokenizer.json, folder or hub id).
            every_n_steps: optimizer steps between evaluations.
            benchmark, data: as `python -m evals.evaluate`; limit: only the first N problems.
            max_new_tokens, batch_size: decoding.
            time_floor, time_factor, workers: the sandbox, as `python -m evals.evaluate`'s flags.
        """
        if every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.tokenizer_source, self.every_n_steps = tokenizer, every_n_steps
        self.benchmark, self.data, self.limit = benchmark, data, limit
        self.max_new_tokens, self.batch_size, self.workers = max_new_tokens, batch_size, workers
        self.time_floor, self.time_factor = time_floor, time_factor

    def setup(self, trainer, pl_module, stage):
        """Fail at start-up, not hours in, on a bad benchmark, tokenizer or sandbox; time limits are measured here
        (once per machine: they are cached)."""
        self.tokenizer = load_tokenizer(self.tokenizer_source)
        self.problems = load_problems(self.benchmark, self.data)[: self.limit]
        if trainer.is_global_zero:
            self.sandbox = Sandbox(self.time_floor)
            self.limits = calibrate(
                self.problems, self.sandbox, self.time_floor, self.time_factor, self.workers, progress=False
            )

    def on_train_start(self, trainer, pl_module):
        self.last_step = trainer.global_step  # a resumed run does not evaluate again at the step it resumed from

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self.last_step:
            return
        self.last_step = step
        if trainer.is_global_zero:
            pl_module.log(f"eval/{self.name}_pass@1", self.pass_at_one(pl_module.model), rank_zero_only=True)
        trainer.strategy.barrier("pass_at_one")

    @property
    def name(self) -> str:
        return self.benchmark if self.benchmark in ("humaneval", "mbpp") else "problems"

    def pass_at_one(self, model) -> float:
        was_training = model.training
        model.eval()
        try:
            samples = list(
                sample_completions(
                    model,
                    self.tokenizer,
                    self.problems,
                    self.max_new_tokens,
                    batch_size=self.batch_size,
                    progress=False,
                )
            )
        finally:
            model.train(was_training)
        _, summary = evaluate(self.problems, samples, self.sandbox, self.workers, progress=False, limits=self.limits)
        return float(summary["pass@1"])
