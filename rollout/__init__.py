"""The simulated world (data sets, user model, dynamics, quit rules), metrics, reference policies,
the transition batch schema, the one episode loop (`episodes`), the rollout worker and the
gymnasium VectorEnv. It reaches the planner only through `planner_api`.

Kept free of heavy imports: submodules are imported where they are used.
"""
