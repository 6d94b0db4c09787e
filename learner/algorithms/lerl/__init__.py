"""LERL (arXiv 2601.19585): an LLM planner picks each user's content categories, a low-level PPO
policy picks the slate inside them; a reflection pool of critiques of past sessions helps the
planner. `algorithm.LERL` is the loop, `reflection_pool` the pool."""
