"""The learner core: `runtime` (Ray, the planner service, run directories, shut-down), `skeleton`
(the run every algorithm fills in), `serial` (the same loop in one process), PPO, the learner actor
and data-parallel group, the rollout pool, checkpoints, fault injection, evaluation and metrics
rows. The algorithms live in `learner.algorithms`; `learner.config` composes their options and
`learner.main` is the CLI on top (nothing imports it)."""
