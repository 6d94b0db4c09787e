"""The planner service hosted in a Ray actor (starts Ray in-process)."""

from __future__ import annotations

import pytest

from protos import planner_pb2
from planner_api.client import PlannerClient
from planner_api.heuristics import heuristic_plan


@pytest.mark.ray
def test_ray_actor_serves_plan_requests(local_ray: None) -> None:
    import ray

    from llm_server.ray_actor import RemotePlannerServer

    server = RemotePlannerServer.remote()
    address = ray.get(server.start.remote("heuristic"), timeout=60)
    assert address.startswith("127.0.0.1:")
    assert ray.get(server.address.remote(), timeout=60) == address
    req = planner_pb2.PlanRequest(category_names=["a", "b", "c"], seed=1)
    req.users.add(user_id=0, step=0, candidate_categories=[0, 1, 2], num_categories=2)
    with PlannerClient(address) as client:
        client.wait_ready(timeout_s=30.0)
        response, fell_back = client.plan(req, timeout_s=10.0)
    assert not fell_back
    assert response == heuristic_plan(req)
    ray.get(server.stop.remote(), timeout=60)
