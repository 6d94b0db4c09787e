"""LAAC (arXiv 2507.21274): the LLM as a reference policy for an offline actor-critic with twin
critics, a grounding loss and a TD loss. `algorithm` is the run (its docstring lists the steps);
`offline_data` the logged MDP, `reference` the cached LLM answers, `model` the networks,
`evaluation` the offline and in-world metrics."""
