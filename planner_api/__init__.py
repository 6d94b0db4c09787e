"""The planner contract both ends stand on: limits and request validation (`contract`), history
columns (`history`), the no-LLM answers that are the fallback (`heuristics`), the security filters
for tokens, TLS and untrusted text (`security`), and the client with its deadline and counted
fallback (`client`). `rollout` and `llm_server` import it; it imports only `protos`."""
