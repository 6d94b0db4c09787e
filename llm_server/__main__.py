"""`python -m llm_server`: runs the planner service (see llm_server.cli)."""

from llm_server.cli import cli

raise SystemExit(cli())
