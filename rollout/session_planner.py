"""The rollout side of planning: turns a batch of users' sessions into planner requests and the
answers into category masks, and finished sessions into reflections.

- The request carries the user's logged past (the starting history the policy sees too) and each
  user's whole session so far (a History: one entry per shown item, with
  its step, as packed columns), not a sliding window: the prompt for step t+1 then extends the prompt for step t, which
  is what lets the LLM's prefix cache serve most of it (DESIGN.md; VLLM_CPU.md).
- The planner answers a ranked pool of `pool_size` categories per user, every `plan_every` steps
  (the slow, high-level decision: what this user is into); each step the mask is the best
  `num_categories` of that pool. With `rotate` (an ablation; off in the LERL rows) they are the
  best not shown at the user's last step: a rule that keeps users from tiring of a category
  whatever the planner knows, so it is named and measured on its own.
- With `max_age` > 0, planning during the session is asynchronous: the plan due at step t
  (from the session through step t-1) is requested in the background, and the users go on with
  their older pool until it comes back; the rollout waits for it only once a pool is `max_age`
  steps old. One request is in flight at a time (a due plan is skipped while the last one is
  still out, counted `plans_skipped`). The pool's age in steps at every user-step (`plan_age_*`)
  and the time spent waiting (`seconds_planner`) are measured. The session-start plan is always
  awaited: there is no older pool.
- With `reuse_batches`, a user's session-start plan (made from the user's past and the batch's
  reflections, before anything is shown) is kept and reused when the actor meets the user again,
  for up to that many batches: on a CPU the LLM plans about 10 users a second, and a run meets
  each user many times. Reuses and their age are counted (`plans_reused`, `plan_reuse_age_sum`).
  With `max_age` > 0 as well, expired plans are renewed in the background instead: a user whose
  plan is past the bound plans this session with it once more, and the actor asks again, oldest
  first, for up to a batch of its expired users at a time (one renewal request in flight; counted
  `plans_renewed`); only a plan `RENEWAL_SLACK` times the bound old is waited for. Without this,
  the users planned in the same first batches all expired together and the rollout stalled
  while the engine planned them again; with it, a fast loop only sees its plans age (logged).
- `prime` makes the session-start plans of an actor's training users before its first batch
  (with reuse on), `chunk_users` per call; session-start calls are chunked the same way. The chunk
  is sized to the machine: a call that takes over half its deadline shrinks it to what fits in a
  third (`fit_chunk`), since the LLM's rate differs several times between CPUs.
- After the episode, a few sessions (the best and the worst by return, then the next ones) are sent
  to Reflect; their critiques and returns go back to the learner side's reflection pool. With
  `reflect_async`, the rollout never waits for Reflect: the call runs in the background and its
  critiques go back with the first batch that ends after it is done; a batch that ends while a
  call is still out is not reflected on (counted `reflects_skipped`). Reflect generates free text
  (tens of tokens per session, one token per engine step, each step shared with other users'
  plans), which made it most of an LLM run's rollout time when each batch waited for its own.
  Which batches are reflected on then depends on timing, as the asynchronous plans do.
"""
from __future__ import annotations

import time

import numpy as np

from planner_api.contract import MAX_HISTORY, MAX_PAST, MAX_TITLE_BYTES, truncate_utf8
from planner_api.heuristics import heuristic_plan
from planner_api.history import column_array, extend_histories, history_from_columns, slice_history
from policy.masking import category_mask
from protos import planner_pb2

RENEWAL_SLACK = 4
"""With background renewal, a reused plan up to this many times `reuse_batches` old is still used
while its renewal is out; older ones are waited for."""


class SessionPlanner:
    """Planner requests and category masks for one rollout worker's batch of users."""

    def __init__(self, world, client, num_categories: int, plan_every: int, reflect_sessions: int,
                 timeout_s: float, seed: int, send_titles: bool, slate_size: int, max_age: int = 0,
                 pool_size: int = 0, reuse_batches: int = 0, rotate: bool = False, reflect_async: bool = False,
                 chunk_users: int = 0):
        self.world, self.client, self.max_age, self.rotate = world, client, max_age, rotate
        self.chunk_users = chunk_users  # users per session-start Plan call (0 = the whole batch in one)
        self.reflect_async = reflect_async
        self._reflecting = None  # (future of the last batch's Reflect call, the returns of its sessions)
        self.pool_size = min(max(pool_size, num_categories), world.num_categories)
        self._executor = None
        self._pending = None  # (rows, step it was asked at, future)
        self.n = min(num_categories, world.num_categories)
        self.plan_every, self.reflect_sessions, self.timeout_s, self.seed = plan_every, reflect_sessions, timeout_s, seed
        self.send_titles = send_titles
        self.titles = [truncate_utf8(t, MAX_TITLE_BYTES) for t in world.item_titles] if send_titles else []
        self.category_names = [truncate_utf8(name, MAX_TITLE_BYTES) for name in world.category_names]
        self.max_steps_sent = max(1, MAX_HISTORY // slate_size)
        self.reflections: list[str] = []
        self.stats = self._empty_stats()
        # user id -> (ranked pool, batch it was planned in, the user's past as sent): session-start
        # plans to reuse, and what renewing one asks with.
        self.reuse_batches, self.batches_started = reuse_batches, 0
        self._plan_cache: dict[int, tuple[np.ndarray, int, planner_pb2.History | None]] = {}
        self._renewing = None  # (user ids, batch they were asked in, future): expired plans being made again

    @staticmethod
    def _empty_stats() -> dict:
        return dict(seconds_planner=0.0, planner_calls=0, planner_fallbacks=0, plan_age_sum=0, plan_age_count=0,
                    seconds_reflect=0.0, reflect_calls=0, reflect_fallbacks=0, reflects_in_background=0, reflects_skipped=0,
                    plans_reused=0, plan_reuse_age_sum=0, plans_skipped=0, plans_renewed=0)

    def start(self, batch_size: int, reflections: list[str], past_items: np.ndarray | None = None,
              past_feedback: np.ndarray | None = None) -> None:
        """New sessions for every slot; `reflections` go into every plan request of this batch;
        `past_items` / `past_feedback` ([B, H], -1 = none): what each session starts from (the
        history the policy sees at step 0), sent as each user's `past`."""
        self.reflections = list(reflections)
        self.batches_started += 1
        self.pasts = [self._past(items, feedback) for items, feedback in zip(past_items, past_feedback)] \
            if past_items is not None else [None] * batch_size
        self.slates: list[np.ndarray] = []
        self.clicks: list[np.ndarray] = []
        self.shown_at: list[np.ndarray] = []
        self.pools = np.full((batch_size, self.pool_size), -1, np.int64)   # ranked, best first
        self.planned_at = np.zeros(batch_size, np.int64)
        # Each user's session so far as a contract History, grown by one step in `record`: a
        # request copies it whole (one copy in C, instead of reading every entry again into each
        # request's columns: 0.18 against 0.58 ms for 64 users with 60 entries).
        self.histories = [planner_pb2.History() for _ in range(batch_size)]
        self.stats = self._empty_stats()
        if self._pending is not None:  # a plan for the last batch's sessions: no longer wanted
            self._pending[2].cancel()
            self._pending = None

    def _past(self, items: np.ndarray, feedback: np.ndarray) -> planner_pb2.History | None:
        """One user's starting history as a contract History (its latest MAX_PAST items)."""
        valid = np.flatnonzero(items >= 0)[-MAX_PAST:]
        if not valid.size:
            return None
        ids = items[valid].astype(np.int64)
        return history_from_columns(ids, self.world.item_category[ids], np.clip(feedback[valid], 0.0, 1.0)
                                    .astype(np.float64), np.zeros(valid.size, np.int64),
                                    [self.titles[i] for i in ids.tolist()] if self.send_titles else ())

    def record(self, slates: np.ndarray, clicks: np.ndarray, active: np.ndarray) -> None:
        """What each active user was shown this step and how they responded."""
        step = len(self.slates)
        self.slates.append(slates)
        self.clicks.append(clicks)
        self.shown_at.append(active.copy())
        rows = np.flatnonzero(active)
        if not rows.size:
            return
        shown = slates[rows]
        histories = [self.histories[row] for row in rows.tolist()]
        extend_histories(histories, {"item_ids": shown, "category_ids": self.world.item_category[shown],
                                     "feedback": clicks[rows], "steps": np.full(shown.shape, step, np.int32)})
        if self.send_titles:
            for history, items in zip(histories, shown.tolist()):
                history.titles.extend([self.titles[item] for item in items])

    def _request(self, rows: np.ndarray, user_ids: np.ndarray, step: int) -> planner_pb2.PlanRequest:
        req = planner_pb2.PlanRequest(category_names=self.category_names, seed=self.seed)
        first = max(0, step - self.max_steps_sent)
        for row in rows.tolist():
            user = self._add_user(req, int(user_ids[row]), step, self.pasts[row])
            history = self.histories[row]
            # Entries from before the window the contract allows (steps ascend; long sessions only).
            stale = int(np.searchsorted(column_array(history, "steps"), first)) if first else 0
            if stale:
                self.histories[row] = history = slice_history(history, stale)
            user.history.CopyFrom(history)
        return req

    def _add_user(self, req: planner_pb2.PlanRequest, user_id: int, step: int,
                  past: planner_pb2.History | None) -> planner_pb2.UserContext:
        """One user of a plan request: every category a candidate, the batch's reflections, the past."""
        user = req.users.add(user_id=user_id, step=step, num_categories=self.pool_size, reflections=self.reflections)
        user.candidate_categories.extend(range(self.world.num_categories))
        if past is not None:
            user.past.CopyFrom(past)
        return user

    def _apply(self, response, fell_back: bool, rows: np.ndarray, planned_at: int) -> None:
        self.stats["planner_calls"] += 1
        self.stats["planner_fallbacks"] += int(fell_back)
        self.pools[rows] = np.array([list(p.category_ids) for p in response.plans], np.int64)
        self.planned_at[rows] = planned_at

    def _reuse(self, rows: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """Fill the pools of `rows` whose user has a session-start plan at most `reuse_batches`
        batches old (with background renewal: `RENEWAL_SLACK` times that, renewing expired ones);
        return the rows left to plan now."""
        renewing = self.max_age > 0
        if renewing:
            self._take_renewed()
        limit = self.reuse_batches * (RENEWAL_SLACK if renewing else 1)
        ask = []
        for row in rows.tolist():
            cached = self._plan_cache.get(int(user_ids[row]))
            age = self.batches_started - cached[1] if cached is not None else None
            if age is not None and age <= limit:
                self.pools[row] = cached[0]
                self.planned_at[row] = 0
                self.stats["plans_reused"] += 1
                self.stats["plan_reuse_age_sum"] += age
            else:
                ask.append(row)
        if renewing and self._renewing is None:
            self._renew(len(rows))
        return np.asarray(ask, np.int64)

    def _renew(self, at_most: int) -> None:
        """Ask again, in the background, for the session-start plans of up to `at_most` of this
        actor's users whose plans are past `reuse_batches`, oldest first."""
        expired = [(planned_in, user) for user, (_, planned_in, _) in self._plan_cache.items()
                   if self.batches_started - planned_in > self.reuse_batches]
        if not expired:
            return
        users = [user for _, user in sorted(expired)[:at_most]]
        req = planner_pb2.PlanRequest(category_names=self.category_names, seed=self.seed)
        for user in users:
            self._add_user(req, user, 0, self._plan_cache[user][2])
        self._renewing = (users, self.batches_started, self._background().submit(self.client.plan, req, self.timeout_s))
        self.stats["plans_renewed"] += len(users)

    def _take_renewed(self) -> None:
        """Put the renewed plans in the cache once they are back (a fallback answer is not kept)."""
        if self._renewing is None or not self._renewing[2].done():
            return
        users, asked_in, future = self._renewing
        self._renewing = None
        response, fell_back = future.result()
        if not fell_back:
            for user, plan in zip(users, response.plans):
                self._plan_cache[user] = (np.array(list(plan.category_ids), np.int64), asked_in, self._plan_cache[user][2])

    def _background(self):
        """The executor of background calls: a mid-session plan, a renewal and a Reflect, at most
        one of each in flight (threads: the client is thread-safe)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="planner-async")
        return self._executor

    def _chosen(self, rows: np.ndarray) -> list[list[int]]:
        """Per user: the best n pool categories (with `rotate`: not shown at the last step first)."""
        last = self.slates[-1] if self.slates and self.rotate else None
        chosen = []
        for row in rows:
            pool = self.pools[row]
            if last is not None and self.shown_at[-1][row]:
                shown = set(self.world.item_category[last[row]].tolist())
                pool = [c for c in pool if c not in shown] + [c for c in pool if c in shown]
            chosen.append(list(pool[: self.n]))
        return chosen

    def _plan_now(self, rows: np.ndarray, user_ids: np.ndarray, step: int) -> None:
        """Ask for `rows`' plans and wait (the session start, or every due plan when synchronous).
        At the session start, in calls of at most `chunk_users` users, each answer kept for reuse
        as it comes: one call for a whole first batch of an LLM run ran past its deadline, fell
        back, and was asked again by the next batch. Once a call falls back, the session start's
        other chunks take the local heuristic plan without calling (counted as fallbacks): the
        wait stays bounded by one deadline, as with a single call."""
        ask = self._reuse(rows, user_ids) if step == 0 and self.reuse_batches else rows
        chunk = self.chunk_users if step == 0 and self.chunk_users > 0 else max(ask.size, 1)
        failed = False
        for lo in range(0, ask.size, chunk):
            part = ask[lo:lo + chunk]
            request = self._request(part, user_ids, step)
            t0 = time.perf_counter()
            response, fell_back = (heuristic_plan(request), True) if failed else self.client.plan(request, self.timeout_s)
            took = time.perf_counter() - t0
            self.stats["seconds_planner"] += took
            self._apply(response, fell_back, part, step)
            if not failed and step == 0:
                self.fit_chunk(part.size, took, fell_back)  # sized for the next session starts
            failed = failed or fell_back
            if step == 0 and self.reuse_batches and not fell_back:
                for row in part.tolist():
                    self._plan_cache[int(user_ids[row])] = (self.pools[row].copy(), self.batches_started, self.pasts[row])

    def fit_chunk(self, users: int, seconds: float, fell_back: bool) -> bool:
        """After a session-start call of `users` users that took `seconds`: if it took over half the
        deadline (or fell back at it), shrink `chunk_users` so a call takes about a third of the
        deadline at the rate measured; returns whether it shrank. A fallback well inside the
        deadline says the planner is down, not slow, and leaves the chunk alone. The rate differs
        several times between CPUs (AVX2-only ones run the LLM far slower), and a call that falls
        back gives nothing to keep."""
        if self.chunk_users <= 1 or self.timeout_s <= 0 or seconds <= 0.5 * self.timeout_s:
            return False
        fit = max(1, int(users * self.timeout_s / (3.0 * seconds)))
        if fit >= self.chunk_users:
            return False
        self.chunk_users = fit
        return True

    def prime(self, user_ids: np.ndarray, past_items: np.ndarray, past_feedback: np.ndarray,
              max_seconds: float, reflections: list[str] | tuple = ()) -> dict:
        """Make, before the first batch, the session-start plans of `user_ids` (from their starting
        histories `past_items` / `past_feedback`, [U, H], with `reflections`: none in a fresh run,
        a draw from the restored pool after a resume) and keep them for reuse, `chunk_users` per
        call, the chunk fitted to the rate measured (`fit_chunk`). It stops at a call that falls
        back unless that shrank the chunk (the planner is down, or still too slow for one user a
        call) and asks no more once `max_seconds` have passed, so it takes at most that plus one
        call's deadline; the users left are planned when first met. On a CPU the LLM plans about 10
        users a second, so an LLM run's first batches otherwise spend their time waiting for these.
        Returns {"users": planned, "calls", "fallbacks", "seconds", "chunk_users": the chunk now}."""
        if not self.reuse_batches:
            raise ValueError("priming plans needs plan reuse (plan_reuse_batches > 0): nothing would keep them")
        t0, done, lo = time.perf_counter(), dict(users=0, calls=0, fallbacks=0, seconds=0.0), 0
        kept, self.reflections = self.reflections, list(reflections)
        try:
            while lo < len(user_ids) and time.perf_counter() - t0 < max_seconds:
                chunk = self.chunk_users if self.chunk_users > 0 else len(user_ids)
                users = [int(u) for u in user_ids[lo:lo + chunk]]
                pasts = [self._past(items, feedback) for items, feedback in
                         zip(past_items[lo:lo + chunk], past_feedback[lo:lo + chunk])]
                req = planner_pb2.PlanRequest(category_names=self.category_names, seed=self.seed)
                for user, past in zip(users, pasts):
                    self._add_user(req, user, 0, past)
                called = time.perf_counter()
                response, fell_back = self.client.plan(req, self.timeout_s)
                done["calls"] += 1
                shrank = self.fit_chunk(len(users), time.perf_counter() - called, fell_back)
                if fell_back:  # a fallback answer is not kept (as at a session start)
                    done["fallbacks"] += 1
                    if shrank:
                        continue  # the same users again, fewer a call
                    break
                lo += len(users)
                for user, plan, past in zip(users, response.plans, pasts):
                    self._plan_cache[user] = (np.array(list(plan.category_ids), np.int64), self.batches_started, past)
                done["users"] += len(users)
        finally:
            self.reflections = kept
        done["seconds"], done["chunk_users"] = time.perf_counter() - t0, self.chunk_users
        return done

    def _plan_later(self, rows: np.ndarray, user_ids: np.ndarray, step: int) -> None:
        """Ask for `rows`' plans in the background (at most one request in flight)."""
        if self._pending is not None:
            self.stats["plans_skipped"] += 1
            return
        request = self._request(rows, user_ids, step)  # the session through step - 1
        self._pending = (rows, step, self._background().submit(self.client.plan, request, self.timeout_s))

    def _take_answer(self, step: int, rows: np.ndarray) -> None:
        """Apply the plan in flight if it is back, or wait for it once a pool it replaces is
        `max_age` steps old."""
        if self._pending is None:
            return
        asked_rows, asked_at, future = self._pending
        waiting = np.intersect1d(asked_rows, rows)
        too_old = waiting.size and int((step - self.planned_at[waiting]).max()) >= self.max_age
        if not future.done() and not too_old:
            return
        self._pending = None
        t0 = time.perf_counter()
        response, fell_back = future.result()
        self.stats["seconds_planner"] += time.perf_counter() - t0
        self._apply(response, fell_back, asked_rows, asked_at)

    def masks(self, step: int, active: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """[B, C] category masks for this step (everything allowed for inactive users)."""
        rows = np.flatnonzero(active)
        if step > 0 and self.max_age > 0:
            self._take_answer(step, rows)
        if rows.size and step % self.plan_every == 0:
            if step == 0 or self.max_age == 0:
                self._plan_now(rows, user_ids, step)
            else:
                self._plan_later(rows, user_ids, step)
        self.stats["plan_age_sum"] += int((step - self.planned_at[rows]).sum())
        self.stats["plan_age_count"] += int(rows.size)
        mask = np.ones((len(active), self.world.num_categories), bool)
        if rows.size:
            mask[rows] = category_mask(self._chosen(rows), self.world.num_categories)
        return mask

    def reflect(self, user_ids: np.ndarray, lengths: np.ndarray, returns: np.ndarray) -> list[tuple[str, float]]:
        """Critiques of up to `reflect_sessions` finished sessions (best, worst, second best, ...):
        this batch's; with `reflect_async`, those of the last call made in the background if it is
        done (this batch's are asked for unless that call is still out)."""
        req, picked = self._reflect_request(user_ids, lengths, returns)
        if not self.reflect_async:
            return self._critiques(*self._reflect_call(req), picked) if req is not None else []
        critiques = []
        if self._reflecting is not None and self._reflecting[0].done():
            future, done_picked = self._reflecting
            self._reflecting = None
            response, fell_back, _ = future.result()
            critiques = self._critiques(response, fell_back, 0.0, done_picked)  # nobody waited for it
        if req is not None and self._reflecting is not None:
            self.stats["reflects_skipped"] += 1
        elif req is not None:
            self._reflecting = (self._background().submit(self._reflect_call, req), picked)
            self.stats["reflects_in_background"] += 1
        return critiques

    def _reflect_request(self, user_ids: np.ndarray, lengths: np.ndarray,
                         returns: np.ndarray) -> tuple[planner_pb2.ReflectRequest | None, list[float]]:
        """The Reflect request for this batch's picked sessions, and their returns."""
        if self.reflect_sessions < 1 or not len(returns):
            return None, []
        order = np.argsort(-returns, kind="stable")
        picks = []
        for i in range(min(self.reflect_sessions, len(order))):
            picks.append(int(order[i // 2] if i % 2 == 0 else order[-1 - i // 2]))
        picks = list(dict.fromkeys(picks))
        req = planner_pb2.ReflectRequest(category_names=self.category_names, seed=self.seed)
        for row in picks:
            steps = [s for s in range(len(self.slates)) if self.shown_at[s][row]]
            session = req.sessions.add(user_id=int(user_ids[row]), length=int(lengths[row]),
                                       session_return=float(returns[row]))
            for s in steps:
                session.shown_categories.extend(self.world.item_category[self.slates[s][row]].tolist())
                session.feedback.extend(self.clicks[s][row].tolist())
        return req, [float(returns[row]) for row in picks]

    def _reflect_call(self, req: planner_pb2.ReflectRequest) -> tuple[planner_pb2.ReflectResponse, bool, float]:
        """One Reflect call: (response, fell back, seconds it took)."""
        t0 = time.perf_counter()
        response, fell_back = self.client.reflect(req, self.timeout_s * 4)  # free text: a longer deadline
        return response, fell_back, time.perf_counter() - t0

    def _critiques(self, response, fell_back: bool, waited: float, picked: list[float]) -> list[tuple[str, float]]:
        """Count a finished Reflect call (`waited`: the rollout's seconds waiting for it) and pair
        its critiques with the sessions' returns."""
        self.stats["seconds_reflect"] += waited
        self.stats["reflect_calls"] += 1
        self.stats["reflect_fallbacks"] += int(fell_back)
        return list(zip(response.critiques, picked))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.client.close()
