"""Training, by phase: GRPO on both stages (:mod:`~socioseg.train.grpo`), the supervised
warm-up of the policy (:mod:`~socioseg.train.sft`) and SAM2's mask training
(:mod:`~socioseg.train.sam`), each with its config in :mod:`~socioseg.train.config` and one
``optim:`` section (:mod:`~socioseg.train.optim`).

Beside them: the rule-based rewards (:mod:`~socioseg.train.rewards`), rollouts through the
engine (:mod:`~socioseg.train.rollout`), the GRPO math as pure functions
(:mod:`~socioseg.train.algorithms`), checkpoints, precision, multi-GPU sharding
(:mod:`~socioseg.train.parallel`), the run log, the output model folder of a supervised run
(:mod:`~socioseg.train.model_folder`) and the per-GPU memory planner
(:mod:`~socioseg.train.memory_plan`).

It may import the core, :mod:`socioseg.models`, :mod:`socioseg.data` and, for validation,
:mod:`socioseg.eval`; nothing imports it but the CLI.
"""
