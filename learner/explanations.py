"""Explanations measured (the survey's language metrics for the explainer role).

After evaluation, a seeded sample of the slates each explained policy showed gets an `Explain`
answer from the planner service, with what the explainer may know: the user's history before that
slate (the logged past, then the session so far) and the slate, with titles. Each answer is scored
- faithful: it names something of the slate or of the history and nothing else (no other
  category, no other catalog title; `planner_api.explanations.faithfulness`);
- valid: the service's own answer (not the heuristic's, which replaces an invalid LLM answer or
  a missed deadline) of at least 3 words that does not merely repeat the prompt (starts like one
  of its lines, `llm_server.prompts.EXPLAIN_ECHOES`: what SmolLM2-135M mostly does);
- words: its length;
- judge: a 1-5 rating by the service's `Judge` (the LLM, on a constrained rubric; with the
  heuristic backend, or on a fallback, the rule's rating, and the backend says so).
The policies compared are greedy (slates chosen without the planner) and greedy+planner (the
same oracle inside the planner's categories), and the trained policy.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from llm_server.prompts import EXPLAIN_ECHOES
from planner_api.contract import MAX_HISTORY
from planner_api.explanations import faithfulness
from planner_api.history import column_array, history_from_columns
from protos import planner_pb2
from rollout.episodes import EpisodeRun
from rollout.llm_user import item_title, slate_items
from rollout.world import World

EXPLAINED_POLICIES = ("greedy", "greedy+planner", "trained")
"""Rows whose slates are explained: without the planner, with it (the same oracle), and the learned policy."""
EXAMPLES = 3
"""Explanations shown per policy in the report (with their scores)."""


def history_before(world: World, run: EpisodeRun, row: int) -> planner_pb2.History:
    """The history of the user of slate `row` before it: the user's starting history, then the
    slates shown to that user earlier in the run, with the responses (the latest MAX_HISTORY)."""
    user = int(run.slate_users[row])
    items, feedback = [], []
    if world.start_items is not None:
        kept = world.start_items[user] >= 0
        items += world.start_items[user][kept].tolist()
        feedback += world.start_feedback[user][kept].tolist()
    earlier = np.flatnonzero(run.slate_users[:row] == user)
    for r in earlier.tolist():
        items += run.slates[r].tolist()
        feedback += run.clicks[r].tolist()
    items, feedback = items[-MAX_HISTORY:], feedback[-MAX_HISTORY:]
    return history_from_columns(items, world.item_category[np.asarray(items, np.int64)],
                                [float(min(max(f, 0.0), 1.0)) for f in feedback], [0] * len(items),
                                [item_title(world.data, i) for i in items])


def explain_runs(world: World, client, runs: dict[str, EpisodeRun], count: int, seed: int,
                 timeout_s: float, service_backend: str = "vllm") -> dict[str, dict]:
    """Explain `count` seeded slates of each run of EXPLAINED_POLICIES in `runs` and score them
    (module doc); {policy: summary with a few examples}. `service_backend`: the planner service's
    backend (an answer marked "heuristic" by another backend replaced an invalid one)."""
    names = list(world.category_names)
    catalog = [str(t or "") for t in world.item_titles]
    out = {}
    for policy in EXPLAINED_POLICIES:
        run = runs.get(policy)
        if run is None or not len(run.slates) or count < 1:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE8A1]))
        rows = np.sort(rng.choice(len(run.slates), size=min(count, len(run.slates)), replace=False))
        judge = planner_pb2.JudgeRequest(category_names=names, seed=seed)
        requests = []
        for row in rows.tolist():
            slate = slate_items(world.data, run.slates[row])
            requests.append(planner_pb2.ExplainRequest(user_id=int(run.slate_users[row]),
                                                       history=history_before(world, run, row), slate=slate,
                                                       category_names=names, seed=seed))
        # Concurrent calls, so that the engine batches them (the client is thread-safe).
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="explain") as pool:
            answers = list(pool.map(lambda req: client.explain(req, timeout_s), requests))
        scored = []
        for req, (answer, fell_back) in zip(requests, answers):
            text = answer.explanation
            check = faithfulness(text, [c.category_id for c in req.slate],
                                 column_array(req.history, "category_ids").tolist(), names,
                                 [c.title for c in req.slate], list(req.history.titles), catalog)
            scored.append({"text": text, "faithful": check.faithful, "ungrounded": check.ungrounded,
                           "words": len(text.split()),
                           "valid": not fell_back and len(text.split()) >= 3 and not text.startswith(EXPLAIN_ECHOES)
                           and (answer.backend != "heuristic" or service_backend == "heuristic"),
                           "explainer": "heuristic (fallback)" if fell_back else answer.backend})
            judge.cases.add(history=req.history, slate=req.slate, explanation=text)
        ratings, judge_fell_back = client.judge(judge, timeout_s * 4)
        for entry, score in zip(scored, ratings.scores):
            entry["judge"] = float(score)
        out[policy] = {
            "explanations": len(scored), "faithful": float(np.mean([e["faithful"] for e in scored])),
            "valid": float(np.mean([e["valid"] for e in scored])),
            "words": float(np.mean([e["words"] for e in scored])),
            "judge": float(np.mean([e["judge"] for e in scored])),
            "judge_backend": "heuristic (fallback)" if judge_fell_back else ratings.backend,
            "explainer": sorted({e["explainer"] for e in scored}),
            "examples": scored[:EXAMPLES]}
    return out


def with_explanations(rows: dict[str, dict], summaries: dict[str, dict]) -> dict[str, dict]:
    """Each explained row gains its summary (`explanations`) and the four scores as flat columns
    (`explanation_faithful`, `explanation_valid`, `explanation_words`, `explanation_judge`)."""
    for policy, summary in summaries.items():
        if policy in rows:
            rows[policy]["explanations"] = summary
            for key in ("faithful", "valid", "words", "judge"):
                rows[policy][f"explanation_{key}"] = summary[key]
    return rows


def explanation_table(summaries: dict[str, dict]) -> str:
    """The explained policies side by side, then their first examples with their scores."""
    lines = ["explanations (faithful: names only what is in the slate or the history; valid: the "
             "explainer's own answer; judge: 1-5):",
             f"  {'policy':<20}{'n':>4}{'faithful':>10}{'valid':>8}{'words':>8}{'judge':>8}  judge by"]
    for policy, s in summaries.items():
        lines.append(f"  {policy:<20}{s['explanations']:>4}{s['faithful']:>10.2f}{s['valid']:>8.2f}"
                     f"{s['words']:>8.1f}{s['judge']:>8.2f}  {s['judge_backend']}")
    for policy, s in summaries.items():
        for e in s["examples"][:1]:
            lines.append(f"  e.g. {policy}: \"{e['text']}\" (faithful {e['faithful']}, judge {e['judge']:.1f})")
    return "\n".join(lines)
