"""The rollout side's plan requests: each user's whole session (within the contract's window),
oldest first, exactly the items shown to that user while they were active."""
from __future__ import annotations

import time

import numpy as np
import pytest

from planner_api.contract import MAX_TITLE_BYTES, truncate_utf8, validate_plan_request
from planner_api.history import column_array, history_entries, history_length
from rollout.session_planner import SessionPlanner
from rollout.world import World, WorldConfig

CFG = WorldConfig(dataset="synthetic", num_items=120, num_categories=8, num_users=50, history_len=10)


def _session(planner: SessionPlanner, world: World, steps: int, users: int, seed: int):
    rng = np.random.default_rng(seed)
    shown = []
    for step in range(steps):
        slates = np.stack([rng.choice(world.num_items, CFG.slate_size, replace=False) for _ in range(users)])
        clicks = rng.random((users, CFG.slate_size)).round().astype(np.float32)
        active = rng.random(users) > 0.3
        planner.record(slates, clicks, active)
        shown.append((slates, clicks, active))
    return shown


def _expected(world: World, shown, row: int, first: int):
    out = []
    for step, (slates, clicks, active) in enumerate(shown):
        if step >= first and active[row]:
            out += [(int(i), int(world.item_category[i]), float(f), step) for i, f in zip(slates[row], clicks[row])]
    return out


def test_requests_carry_each_users_shown_items_in_order() -> None:
    world = World.build(CFG, log=lambda line: None)
    planner = SessionPlanner(world, None, 3, 1, 0, 1.0, 0, False, CFG.slate_size, pool_size=4)
    planner.start(5, ["a lesson"])
    shown = _session(planner, world, 7, 5, seed=1)
    req = planner._request(np.arange(5), np.arange(10, 15), 7)
    assert [u.user_id for u in req.users] == list(range(10, 15))
    for row, user in enumerate(req.users):
        got = [(e.item_id, e.category_id, e.feedback, e.step) for e in history_entries(user.history)]
        assert got == _expected(world, shown, row, 0)
        assert list(user.reflections) == ["a lesson"] and user.num_categories == 4


def test_long_sessions_send_only_the_window_the_contract_allows() -> None:
    world = World.build(CFG, log=lambda line: None)
    planner = SessionPlanner(world, None, 3, 1, 0, 1.0, 0, False, CFG.slate_size, pool_size=4)
    planner.max_steps_sent = 3
    planner.start(4, [])
    shown = []
    for step in range(9):  # a request every step, as rollouts make them: the window slides
        req = planner._request(np.arange(4), np.arange(4), step)
        for row, user in enumerate(req.users):
            got = [(e.item_id, e.category_id, e.feedback, e.step) for e in history_entries(user.history)]
            assert got == _expected(world, shown, row, max(0, step - 3))
        shown += _session(planner, world, 1, 4, seed=step)  # one more step, recorded after the request


def test_a_new_batch_starts_with_empty_histories() -> None:
    world = World.build(CFG, log=lambda line: None)
    planner = SessionPlanner(world, None, 3, 1, 0, 1.0, 0, False, CFG.slate_size, pool_size=4)
    planner.start(3, [])
    _session(planner, world, 4, 3, seed=3)
    planner.start(3, [])
    assert all(history_length(u.history) == 0 for u in planner._request(np.arange(3), np.arange(3), 0).users)



def test_titles_travel_as_one_column_only_when_asked() -> None:
    world = World.build(CFG, log=lambda line: None)
    for send_titles in (False, True):
        planner = SessionPlanner(world, None, 3, 1, 0, 1.0, 0, send_titles, CFG.slate_size, pool_size=4)
        planner.start(3, [])
        _session(planner, world, 4, 3, seed=5)
        req = planner._request(np.arange(3), np.arange(3), 4)
        validate_plan_request(req)
        for user in req.users:
            history = user.history
            if send_titles:
                assert list(history.titles) == [truncate_utf8(world.item_titles[i], MAX_TITLE_BYTES)
                                                for i in column_array(history, "item_ids").tolist()]
            else:
                assert len(history.titles) == 0


def test_requests_carry_the_starting_history_the_policy_sees_as_the_users_past() -> None:
    """Step 0 is personal for the planner too: each user's past is the env's history at reset."""
    from rollout.users import UserBatchEnv

    world = World.build(CFG, log=lambda line: None)
    env = UserBatchEnv(world, CFG, 4, seed=0)
    env.reset(np.array([3, 7, 11, 19]))
    env.history_items[2] = -1                      # a user with no logged past sends none
    for send_titles in (False, True):
        planner = SessionPlanner(world, None, 3, 1, 0, 1.0, 0, send_titles, CFG.slate_size, pool_size=4)
        planner.start(4, [], env.history_items, env.history_feedback)
        req = planner._request(np.arange(4), env.user_ids, 0)
        validate_plan_request(req)
        for row, user in enumerate(req.users):
            kept = env.history_items[row] >= 0
            got = [(e.item_id, e.category_id, e.feedback, e.step) for e in history_entries(user.past)]
            assert got == [(int(i), int(world.item_category[i]), float(f), 0) for i, f in
                           zip(env.history_items[row][kept], env.history_feedback[row][kept])]
            assert len(user.past.titles) == (int(kept.sum()) if send_titles else 0)
            assert history_length(user.history) == 0
        assert history_length(req.users[2].past) == 0 and history_length(req.users[0].past) == CFG.history_len


class CountingClient:
    """A planner client that answers with the heuristic rule and remembers who it was asked about."""

    def __init__(self):
        self.asked: list[list[int]] = []
        self.requests: list = []

    def plan(self, req, timeout_s):
        from planner_api.heuristics import heuristic_plan

        self.asked.append([u.user_id for u in req.users])
        self.requests.append(req)
        return heuristic_plan(req), False

    def close(self):
        pass


def test_session_start_plans_are_reused_for_a_bounded_number_of_batches() -> None:
    world = World.build(CFG, log=lambda line: None)
    client = CountingClient()
    planner = SessionPlanner(world, client, 3, 20, 0, 1.0, 0, False, CFG.slate_size, pool_size=4, reuse_batches=2)
    users = np.array([5, 6, 7])
    active = np.ones(3, bool)
    pools = []
    for batch, ids in enumerate(([5, 6, 7], [5, 6, 7], [5, 8, 7], [5, 6, 7])):
        planner.start(3, [])
        planner.masks(0, active, np.array(ids))
        pools.append(planner.pools.copy())
        assert planner.stats["plans_reused"] == [0, 3, 2, 0][batch], batch
    # Batch 1 reuses every plan (1 batch old); batch 2 plans only the new user 8 (5 and 7 are 2
    # batches old: still within the bound); in batch 3 the plans of 5, 6, 7 are 3 old: planned anew.
    assert client.asked == [[5, 6, 7], [8], [5, 6, 7]]
    assert (pools[1] == pools[0]).all() and planner.stats["plan_reuse_age_sum"] == 0
    planner.start(3, [])
    planner.masks(0, active, np.array([8, 6, 9]))
    assert planner.stats["plans_reused"] == 2 and planner.stats["plan_reuse_age_sum"] == 2 + 1
    # A step after 0 is never served from the cache; reuse off asks for every user every session.
    off = SessionPlanner(world, CountingClient(), 3, 20, 0, 1.0, 0, False, CFG.slate_size, pool_size=4)
    for _ in range(2):
        off.start(3, [])
        off.masks(0, active, users)
    assert off.client.asked == [[5, 6, 7], [5, 6, 7]] and off.stats["plans_reused"] == 0


def test_expired_plans_are_renewed_in_the_background_oldest_first() -> None:
    """With asynchronous planning, session-start plans past their reuse bound are still used while
    the actor asks again, in the background, for up to a batch of its expired users (oldest
    first, with the past they were planned from); the rollout waits only for plans
    RENEWAL_SLACK times the bound old (or never made)."""
    import threading

    from rollout.session_planner import RENEWAL_SLACK

    world = World.build(CFG, log=lambda line: None)
    client = CountingClient()
    gate = threading.Event()
    plan = client.plan
    client.plan = lambda req, timeout_s: (gate.wait(30) if len(client.asked) >= 2 else None, plan(req, timeout_s))[1]
    planner = SessionPlanner(world, client, 3, 5, 0, 60.0, 0, False, CFG.slate_size, max_age=10, pool_size=4,
                             reuse_batches=1)
    active = np.ones(2, bool)
    past = np.arange(20, dtype=np.int64).reshape(2, 10)
    for ids in ([5, 6], [7, 8]):                      # batches 1, 2: planned and waited for
        planner.start(2, [], past, np.ones((2, 10), np.float32))
        planner.masks(0, active, np.array(ids))
    planner.start(2, [], past, np.ones((2, 10), np.float32))
    t0 = time.perf_counter()
    planner.masks(0, active, np.array([7, 8]))        # batch 3: 7, 8 reused (1 old); 5, 6 (2 old) renewed behind
    assert time.perf_counter() - t0 < 1.0 and planner.stats["plans_reused"] == 2
    assert planner.stats["plans_renewed"] == 2 and planner._renewing[0] == [5, 6]
    gate.set()
    planner._renewing[2].result()
    assert [history_length(u.past) for u in client.requests[-1].users] == [10, 10]
    planner.start(2, [], past, np.ones((2, 10), np.float32))
    planner.masks(0, active, np.array([5, 6]))        # batch 4: the renewed plans (asked in batch 3) are 1 old
    assert planner.stats["plan_reuse_age_sum"] == 2 * 1 and planner.stats["plans_reused"] == 2
    planner._renewing[2].result()
    assert client.asked == [[5, 6], [7, 8], [5, 6], [7, 8]]   # and 7, 8 (2 old now) were renewed behind
    planner._renewing = ([7, 8], 4, _never_done())   # from now on no renewal comes back
    for _ in range(RENEWAL_SLACK):                    # batches 5..: 5 and 6 age past the slack, then are waited for
        planner.start(2, [], past, np.ones((2, 10), np.float32))
        planner.masks(0, active, np.array([5, 6]))
    assert client.asked[-1] == [5, 6] and planner.stats["plans_reused"] == 0
    planner.close()


def _never_done():
    from concurrent.futures import Future

    return Future()


class FixedClient:
    """Answers every user with the same ranked pool, after `delay_s`, counting the steps asked at."""

    def __init__(self, pool: list[int], delay_s: float = 0.0):
        import threading

        self.pool, self.delay_s, self.steps = pool, delay_s, []
        self.release = threading.Event()

    def plan(self, req, timeout_s):
        from protos import planner_pb2

        self.steps.append(req.users[0].step)
        if self.delay_s:
            self.release.wait(self.delay_s)
        response = planner_pb2.PlanResponse(backend="fixed")
        for _ in req.users:
            response.plans.add(category_ids=self.pool)
        return response, False

    def close(self):
        pass


def _shown_categories(world: World, categories: list[int], users: int) -> np.ndarray:
    """[users, K] a slate of items from `categories` (one each, cycling)."""
    items = [int(np.flatnonzero(world.item_category == c)[0]) for c in categories]
    return np.array([[items[k % len(items)] for k in range(CFG.slate_size)]] * users)


def test_rotation_is_an_option_of_its_own() -> None:
    """Off (the LERL rows), the mask is the planner's top categories even when they were just
    shown; on (the ablation), the categories of the user's last slate are passed over."""
    world = World.build(CFG, log=lambda line: None)
    users, active = np.arange(2), np.ones(2, bool)
    masks = {}
    for rotate in (False, True):
        planner = SessionPlanner(world, FixedClient([0, 1, 2, 3, 4, 5]), 3, 20, 0, 1.0, 0, False, CFG.slate_size,
                                 pool_size=6, rotate=rotate)
        planner.start(2, [])
        first = planner.masks(0, active, users)
        planner.record(_shown_categories(world, [0, 1], 2), np.zeros((2, CFG.slate_size), np.float32), active)
        masks[rotate] = (first, planner.masks(1, active, users))
    assert [np.flatnonzero(m[0]).tolist() for m in masks[False]] == [[0, 1, 2], [0, 1, 2]]
    assert np.flatnonzero(masks[True][0][0]).tolist() == [0, 1, 2]
    assert np.flatnonzero(masks[True][1][0]).tolist() == [2, 3, 4]


def test_plans_during_the_session_come_asynchronously_within_the_age_bound() -> None:
    """A due plan is asked for in the background; the users keep the older pool until it is back,
    and the rollout waits for it only once that pool is max_age steps old."""
    world = World.build(CFG, log=lambda line: None)
    users, active = np.arange(3), np.ones(3, bool)
    client = FixedClient([0, 1, 2, 3], delay_s=30.0)
    planner = SessionPlanner(world, client, 2, 2, 0, 60.0, 0, False, CFG.slate_size, max_age=4, pool_size=4)
    planner.start(3, [])
    client.release.set()                                  # the session-start plan is awaited: answer at once
    planner.masks(0, active, users)
    client.release.clear()
    for step in (1, 2, 3):                                # step 2: due, asked in the background
        planner.masks(step, active, users)
    assert planner._pending is not None and planner._pending[1] == 2
    assert (planner.planned_at == 0).all()                # still the step-0 pool: nobody waited
    assert planner.stats["seconds_planner"] < 5.0
    import threading

    threading.Timer(0.3, client.release.set).start()
    planner.masks(4, active, users)                       # the step-0 pool is 4 steps old: wait for the answer
    assert (planner.planned_at == 2).all() and planner.stats["seconds_planner"] >= 0.2
    assert planner._pending[1] == 4                       # and step 4's own plan is asked for
    planner._pending[2].result()
    assert client.steps == [0, 2, 4]
    planner.close()
    ages = planner.stats["plan_age_sum"] / planner.stats["plan_age_count"]
    assert ages == (0 + 1 + 2 + 3 + 2) * 3 / 15


def test_a_due_plan_is_skipped_while_the_last_one_is_in_flight() -> None:
    world = World.build(CFG, log=lambda line: None)
    users, active = np.arange(2), np.ones(2, bool)
    client = FixedClient([0, 1, 2, 3], delay_s=30.0)
    planner = SessionPlanner(world, client, 2, 1, 0, 60.0, 0, False, CFG.slate_size, max_age=10, pool_size=4)
    planner.start(2, [])
    client.release.set()
    planner.masks(0, active, users)
    client.release.clear()
    planner.masks(1, active, users)
    planner.masks(2, active, users)
    assert planner._pending[1] == 1 and planner.stats["plans_skipped"] == 1
    client.release.set()
    planner.start(2, [])                                  # a new batch drops the old session's request
    assert planner._pending is None
    planner.close()


def test_each_user_gets_their_own_plan_and_it_changes_as_the_session_goes() -> None:
    """The issue's check: two users with different histories get different plans, and a user's
    plan follows what the session shows (the heuristic planner, every 2 steps, synchronous)."""
    world = World.build(CFG, log=lambda line: None)
    planner = SessionPlanner(world, CountingClient(), 3, 2, 0, 1.0, 0, False, CFG.slate_size, pool_size=3)
    users, active = np.array([1, 2]), np.ones(2, bool)
    past_items = np.full((2, CFG.history_len), -1, np.int64)
    past_feedback = np.zeros((2, CFG.history_len), np.float32)
    for row, category in enumerate((0, 5)):       # user 1 liked category 0's items, user 2 category 5's
        liked = np.flatnonzero(world.item_category == category)[:4]
        past_items[row, -4:], past_feedback[row, -4:] = liked, 1.0
    planner.start(2, [], past_items, past_feedback)
    first = planner.masks(0, active, users)
    assert first[0, 0] and first[1, 5] and not (first[0] == first[1]).all()
    disliked = np.flatnonzero(world.item_category == 0)[4:4 + CFG.slate_size]
    for step in (0, 1):                            # user 1 is shown category 0 twice and clicks nothing
        planner.record(np.stack([disliked, disliked]), np.zeros((2, CFG.slate_size), np.float32), active)
        if step == 0:
            planner.masks(1, active, users)
    later = planner.masks(2, active, users)
    assert not later[0, 0], "user 1's plan still leads with the category they stopped clicking"


class SlowReflectClient(FixedClient):
    """Answers Reflect with the heuristic's critiques once `release` is set (`calls`: answered)."""

    calls = 0

    def reflect(self, req, timeout_s):
        from planner_api.heuristics import heuristic_reflect

        self.release.wait(self.delay_s)
        self.calls += 1
        return heuristic_reflect(req), False


def _reflected_batches(reflect_async: bool, client, batches: int = 3, between=lambda batch: None):
    """Per batch: (the critiques `reflect` returned, the rollout's seconds waiting for Reflect,
    the batches skipped); `between(batch)` runs after each batch's reflect."""
    world = World.build(CFG, log=lambda line: None)
    planner = SessionPlanner(world, client, 2, 1, 2, 60.0, 0, False, CFG.slate_size, pool_size=4,
                             reflect_async=reflect_async)
    out = []
    for batch in range(batches):
        planner.start(4, [])
        _session(planner, world, 4, 4, seed=batch)
        returns = np.array([1.0, 3.0, 2.0, 0.5]) + batch
        t0 = time.perf_counter()
        critiques = planner.reflect(np.arange(4), np.full(4, 4), returns)
        out.append((critiques, time.perf_counter() - t0, planner.stats["reflects_skipped"]))
        between(batch)
    planner.close()
    return out


def test_reflect_in_the_background_never_makes_the_rollout_wait() -> None:
    """With reflect_async, a batch's Reflect call runs while the next batches are rolled out: a
    batch that ends while it is out is not reflected on (counted) and waits for nothing; the
    critiques, when back, are the ones a synchronous call gives, paired with the same returns."""
    now = SlowReflectClient([0, 1, 2, 3])
    now.release.set()
    synchronous = [critiques for critiques, _, _ in _reflected_batches(False, now)]
    assert all(len(c) == 2 for c in synchronous) and synchronous[0] != synchronous[2]

    slow = SlowReflectClient([0, 1, 2, 3], delay_s=30.0)

    def between(batch: int) -> None:
        if batch == 1:               # batch 0's call answers only after batch 1 has ended
            slow.release.set()
            while slow.calls < 1:
                time.sleep(0.01)
            time.sleep(0.2)

    background = _reflected_batches(True, slow, between=between)
    assert [critiques for critiques, _, _ in background] == [[], [], synchronous[0]]
    assert [skipped for _, _, skipped in background] == [0, 1, 0]   # batch 1 ended while batch 0's was out
    assert max(seconds for _, seconds, _ in background) < 0.1       # nobody waited for the 30 s call


class FallingBackClient(CountingClient):
    """Falls back (the heuristic answer, counted) on the calls numbered in `fail_calls` (0 = first)."""

    def __init__(self, fail_calls):
        super().__init__()
        self.fail_calls = set(fail_calls)

    def plan(self, req, timeout_s):
        response, _ = super().plan(req, timeout_s)
        return response, len(self.asked) - 1 in self.fail_calls


def test_session_start_calls_are_chunked_and_each_answer_is_kept_as_it_comes() -> None:
    """A first batch's plans in calls of chunk_users, each kept as it comes. Once a call falls
    back, the other chunks take the heuristic plan without calling (the wait stays one deadline)
    and are not kept: their users are asked again when next met, the others are reused."""
    world = World.build(CFG, log=lambda line: None)
    client = FallingBackClient(fail_calls=[1])
    planner = SessionPlanner(world, client, 3, 20, 0, 1.0, 0, False, CFG.slate_size, pool_size=4,
                             reuse_batches=5, chunk_users=2)
    users, active = np.array([1, 2, 3, 4, 5, 6, 7]), np.ones(7, bool)
    planner.start(7, [])
    planner.masks(0, active, users)
    assert client.asked == [[1, 2], [3, 4]]
    assert planner.stats["planner_calls"] == 4 and planner.stats["planner_fallbacks"] == 3
    assert (planner.pools >= 0).all()  # every user has a plan, called for or not
    planner.start(7, [])
    planner.masks(0, active, users)
    assert client.asked[2:] == [[3, 4], [5, 6], [7]] and planner.stats["plans_reused"] == 2
    # Mid-session synchronous plans are one call whatever the chunk; chunk 0 = one call.
    mid = CountingClient()
    planner = SessionPlanner(world, mid, 3, 1, 0, 1.0, 0, False, CFG.slate_size, pool_size=4, chunk_users=2)
    planner.start(7, [])
    planner.masks(0, active, users)
    planner.record(np.zeros((7, CFG.slate_size), np.int64), np.zeros((7, CFG.slate_size)), active)
    planner.masks(1, active, users)
    assert [len(a) for a in mid.asked] == [2, 2, 2, 1, 7]
    whole = CountingClient()
    planner = SessionPlanner(world, whole, 3, 20, 0, 1.0, 0, False, CFG.slate_size, pool_size=4, chunk_users=0)
    planner.start(7, [])
    planner.masks(0, active, users)
    assert [len(a) for a in whole.asked] == [7]


def test_priming_makes_the_session_start_plans_before_the_first_batch() -> None:
    """Primed users are not asked again at their first session; their request carried the
    starting history as the past and the reflections given; priming stops at the first call that
    falls back (not kept) and asks nothing once its time is up."""
    world = World.build(CFG, log=lambda line: None)
    client = FallingBackClient(fail_calls=[2])
    planner = SessionPlanner(world, client, 3, 20, 0, 1.0, 0, False, CFG.slate_size, pool_size=4,
                             reuse_batches=5, chunk_users=2)
    users = np.array([10, 11, 12, 13, 14, 15, 16, 17])
    past_items = np.full((8, 4), -1, np.int64)
    past_items[:, -1] = np.arange(8)  # user 10 saw item 0, user 11 item 1, ...
    past_feedback = np.ones((8, 4), np.float32)
    done = planner.prime(users, past_items, past_feedback, max_seconds=60.0, reflections=["too many comedies"])
    assert done["users"] == 4 and done["calls"] == 3 and done["fallbacks"] == 1
    assert client.asked == [[10, 11], [12, 13], [14, 15]]
    assert [column_array(u.past, "item_ids").tolist() for u in client.requests[0].users] == [[0], [1]]
    assert all(list(u.reflections) == ["too many comedies"] for req in client.requests for u in req.users)
    planner.start(4, [])
    planner.masks(0, np.ones(4, bool), np.array([10, 13, 14, 11]))
    assert client.asked[3:] == [[14]] and planner.stats["plans_reused"] == 3
    assert list(client.requests[3].users[0].reflections) == []  # the batch's own reflections, not priming's
    # No time left: nothing is asked. Without reuse there is nothing to keep the plans in.
    assert SessionPlanner(world, CountingClient(), 3, 20, 0, 1.0, 0, False, CFG.slate_size, pool_size=4,
                          reuse_batches=5).prime(users, past_items, past_feedback, 0.0)["calls"] == 0
    with pytest.raises(ValueError, match="plan reuse"):
        SessionPlanner(world, CountingClient(), 3, 20, 0, 1.0, 0, False, CFG.slate_size).prime(
            users, past_items, past_feedback, 10.0)


class SlowClient(CountingClient):
    """Answers at `seconds_per_user` on a fake clock; a call longer than the deadline falls back."""

    def __init__(self, clock, seconds_per_user):
        super().__init__()
        self.clock, self.seconds_per_user = clock, seconds_per_user

    def plan(self, req, timeout_s):
        response, _ = super().plan(req, timeout_s)
        took = self.seconds_per_user * len(req.users)
        self.clock.now += min(took, timeout_s)
        return response, took > timeout_s


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_the_chunk_is_fitted_to_the_rate_the_machine_shows(monkeypatch) -> None:
    """A call that takes over half its deadline shrinks the chunk to what fits in a third; one that
    falls back at the deadline is asked again in smaller calls; a fast fallback (the planner is
    down, not slow) and a fast call leave it alone. A slow CPU then plans its users instead of
    falling back on every call."""
    import rollout.session_planner as session_planner

    clock = FakeClock()
    monkeypatch.setattr(session_planner, "time", clock)
    world = World.build(CFG, log=lambda line: None)
    client = SlowClient(clock, seconds_per_user=1.0)
    planner = SessionPlanner(world, client, 3, 20, 0, 6.0, 0, False, CFG.slate_size, pool_size=4,
                             reuse_batches=5, chunk_users=8)
    users = np.arange(10, 18)
    past = np.full((8, 4), -1, np.int64), np.zeros((8, 4), np.float32)
    done = planner.prime(users, *past, max_seconds=60.0)
    # 8 users take 8 s > 6: fell back, chunk -> 8 * 6 / (3 * 6) = 2; then every user, 2 a call.
    assert client.asked == [list(range(10, 18)), [10, 11], [12, 13], [14, 15], [16, 17]]
    assert done["users"] == 8 and done["fallbacks"] == 1 and done["chunk_users"] == 2 == planner.chunk_users
    assert not planner.fit_chunk(2, 2.0, False)  # 2 s of a 6 s deadline: fits
    assert not planner.fit_chunk(2, 0.1, True)   # fell back at once: down, not slow
    assert planner.fit_chunk(2, 4.0, False) and planner.chunk_users == 1
    assert not planner.fit_chunk(1, 6.0, True)   # one user a call is the least
    # At a session start, a slow call shrinks the chunk for the session starts after it.
    planner = SessionPlanner(world, SlowClient(clock, seconds_per_user=0.5), 3, 20, 0, 6.0, 0, False,
                             CFG.slate_size, pool_size=4, reuse_batches=5, chunk_users=8)
    planner.start(8, [])
    planner.masks(0, np.ones(8, bool), users)
    assert planner.chunk_users == 4  # 8 users in 4 s of 6: 8 * 6 / 12
