"""The world's users answered by the LLM (WorldConfig.user_model llm or hybrid).

- `calibrate`: puts the LLM's answers on the world's scale, from logs the learned model never saw
  (each calibration user's held-out period, the learned model's time split, and as many items the
  user never rated): for `llm`, the LLM's like logit is mapped to the learned model's logit
  distribution on those items (mean and spread matched); for `hybrid`, the LLM's like logit is added
  to the learned model's with the weight a logistic fit of liked-or-not on both gives it, relative to
  the learned model's own (so the world keeps the learned model's click scale). The AUCs of both and
  of the blend on those items are kept with it. Saved as JSON: a run's artefact, reusable.
- `WorldResponder`: what a `UserBatchEnv` consults for each step's slates: one Respond case per
  active user (the persona from their logs before the held-out period, the session so far, the
  slate), answered through `LLMUser` (batched calls, deadline, counted fallback, replay cache).
  The leave answer is not asked: leaving stays the world's quit rule.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from planner_api.history import history_from_columns
from protos import planner_pb2
from rollout.llm_user import (LLMUser, ResponseCache, answers_path, fit_logistic, item_title, logit, slate_items,
                              user_persona)
from rollout.user_model import auc, time_split
from rollout.world import World, WorldConfig


@dataclass
class Calibration:
    """How the LLM's like probability becomes a click logit in the world (see the module)."""

    model_tag: str      # what answered: the LLM service's backend and model (the replay cache's key too)
    fingerprint: str    # the data set's (a calibration is for one data set)
    scale: float        # llm: logit = scale x logit(like) + bias
    bias: float
    weight: float       # hybrid: logit = learned logit + weight x (logit(like) - center)
    center: float
    users: int          # users and items it was fitted on
    items: int
    auc_llm: float      # on those items: the LLM's like, the learned model's logit, the blend
    auc_mf: float
    auc_hybrid: float

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ValueError(f"LLM user calibration {path} does not exist: leave --llm-user-calibration empty to "
                             "make one at start") from None
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"LLM user calibration {path} is not a calibration file ({exc})") from None

    def logits(self, mode: str, learned: np.ndarray, like: np.ndarray) -> np.ndarray:
        z = logit(like)
        if mode == "llm":
            return (self.scale * z + self.bias).astype(np.float32)
        return (learned + self.weight * (z - self.center)).astype(np.float32)


def persona_rows(world: World, user: int, before_holdout: np.ndarray) -> np.ndarray:
    """The logged rows a persona is built from: the user's rows before the learned model's held-out
    period (`before_holdout`, the time split's training mask: what the calibration's personas know,
    so the world's personas know the same)."""
    return np.flatnonzero((world.data.interactions.user == user) & before_holdout)


def calibration_cases(world: World, users: np.ndarray, per_user: int, seed: int):
    """Respond cases of `users` (slates of their first `per_user` held-out ratings and as many never-rated
    items) with the learned model's logits and the liked labels of the slate items."""
    data, it = world.data, world.data.interactions
    train, test = time_split(data, world.user_model_holdout)
    rng = np.random.default_rng([seed, 0xCA1])
    positive = data.positive()
    cases, learned, liked = [], [], []
    for u in users:
        rows = np.flatnonzero(test & (it.user == u))[:per_user]
        if not len(rows):
            continue
        never = np.setdiff1d(np.arange(data.num_items), it.item[it.user == u])
        items = np.r_[it.item[rows], rng.choice(never, len(rows), replace=False)]
        cases.append(planner_pb2.RespondCase(user=user_persona(data, int(u), persona_rows(world, int(u), train)),
                                             slate=slate_items(data, items)))
        learned.append(world.user_model.click.scores(np.full(len(items), u), items[:, None])[:, 0])
        liked.append(np.r_[positive[rows], np.zeros(len(rows), bool)])
    return cases, learned, liked


def calibrate(world: World, llm_user: LLMUser, model_tag: str, num_users: int = 32, per_user: int = 8,
              seed: int = 0, log=print) -> Calibration:
    """Fit the calibration on `num_users` training users' held-out ratings (see the module)."""
    rng = np.random.default_rng([seed, 0xCA2])
    users = np.sort(rng.choice(world.train_users, min(num_users, len(world.train_users)), replace=False))
    cases, learned, liked = calibration_cases(world, users, per_user, seed)
    log(f"calibrating the LLM user on {sum(len(c.slate) for c in cases)} held-out items of {len(cases)} users")
    answers = llm_user.answer(cases, seed=seed)
    like = np.concatenate([np.asarray(a.likes, np.float64) for a in answers])
    mf, y = np.concatenate(learned).astype(np.float64), np.concatenate(liked)
    z = logit(like)
    scale = float(mf.std() / z.std()) if z.std() > 1e-9 else 0.0
    w = fit_logistic(np.c_[mf, z], y)
    weight = float(w[1] / w[0]) if w[0] > 1e-9 else 0.0
    return Calibration(model_tag=model_tag, fingerprint=world.data.fingerprint(), scale=scale,
                       bias=float(mf.mean() - scale * z.mean()), weight=weight, center=float(z.mean()),
                       users=len(cases), items=len(y), auc_llm=auc(like, y), auc_mf=auc(mf, y),
                       auc_hybrid=auc(mf + weight * (z - z.mean()), y))


class WorldResponder:
    """The LLM's part of a UserBatchEnv's click logits (WorldConfig.user_model llm or hybrid)."""

    def __init__(self, world: World, cfg: WorldConfig, calibration: Calibration, llm_user: LLMUser) -> None:
        if cfg.user_model not in ("llm", "hybrid"):
            raise ValueError(f"a WorldResponder is for user_model llm or hybrid, not {cfg.user_model!r}")
        if calibration.fingerprint != world.data.fingerprint():
            raise ValueError(f"the LLM user calibration was made on other data ({calibration.fingerprint}, this world's "
                             f"is {world.data.fingerprint()}): make a new one (leave --llm-user-calibration empty)")
        self.world, self.mode, self.calibration, self.llm_user = world, cfg.user_model, calibration, llm_user
        self._personas: dict[int, planner_pb2.UserPersona] = {}
        self._before_holdout = time_split(world.data, world.user_model_holdout)[0]   # once: personas read it

    def close(self) -> None:
        """Closes the replay cache (the client is its owner's to close)."""
        if self.llm_user.cache is not None:
            self.llm_user.cache.close()

    def _persona(self, user: int) -> planner_pb2.UserPersona:
        if user not in self._personas:
            self._personas[user] = user_persona(self.world.data, user, persona_rows(self.world, user, self._before_holdout))
        return self._personas[user]

    def _session(self, env, row: int) -> planner_pb2.History:
        """The session so far of one env row: its last steps x slate entries of the history window."""
        k, steps = env.cfg.slate_size, int(env.steps[row])
        n = min(steps * k, env.history_items.shape[1])
        items = env.history_items[row, env.history_items.shape[1] - n:]
        step_of = steps - 1 - (np.arange(n)[::-1] // k)
        data = self.world.data
        return history_from_columns(items, data.item_category[items], env.history_feedback[row, -n:] if n else [],
                                    step_of.astype(np.int32), [item_title(data, i) for i in items])

    def logits(self, env, slates: np.ndarray, learned: np.ndarray) -> np.ndarray:
        """[B, K] click logits of every active row's slate (inactive rows keep the learned model's)."""
        rows = np.flatnonzero(env.active)
        out = np.array(learned, np.float32, copy=True)
        if not len(rows):
            return out
        cases = [planner_pb2.RespondCase(user=self._persona(int(env.user_ids[r])), session=self._session(env, r),
                                         slate=slate_items(self.world.data, slates[r])) for r in rows]
        answers = self.llm_user.answer(cases)
        like = np.asarray([list(a.likes) for a in answers], np.float64)
        out[rows] = self.calibration.logits(self.mode, learned[rows], like)
        return out


def calibration_path(world: World, model_tag: str) -> Path:
    """Where the calibration of `model_tag` on this world's data is kept between runs."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_tag)
    return answers_path().parent / f"calibration-{world.data.name}-{world.data.fingerprint()}-{safe}.json"


def ensure_calibration(world: World, cfg: WorldConfig, client, model_tag: str, log=print) -> str:
    """The calibration file of cfg (cfg.llm_user_calibration when set, else the kept one of this data
    and model, made now from held-out logs through `client` when there is none); returns its path."""
    if cfg.llm_user_calibration:
        Calibration.load(cfg.llm_user_calibration)  # fails early, with what to do, when unusable
        return cfg.llm_user_calibration
    path = calibration_path(world, model_tag)
    if path.exists():
        return str(path)
    cache = ResponseCache(answers_path(), model_tag)
    try:
        llm_user = LLMUser(client, world.category_names, cfg.llm_user_timeout_s, cache)
        calibration = calibrate(world, llm_user, model_tag, log=log)
    finally:
        cache.close()
    if llm_user.stats.fallback_cases:
        raise RuntimeError(f"{llm_user.stats.fallback_cases} of the calibration's cases were answered by the rule "
                           "user (the LLM service failed or timed out): no calibration made; check the service")
    log(f"LLM user calibration: AUC on held-out items llm {calibration.auc_llm:.3f}, learned model "
        f"{calibration.auc_mf:.3f}, hybrid {calibration.auc_hybrid:.3f} (LLM weight {calibration.weight:+.3f})")
    return str(calibration.save(path))


def attach_llm_user(env, world: World, cfg: WorldConfig, client, cache_path: str | Path | None = None
                    ) -> WorldResponder | None:
    """Makes `env` ask the LLM service (through `client`) for its users' responses when cfg.user_model is
    llm or hybrid, replaying answers kept at `cache_path` (default: `answers_path()`); returns the
    responder (None for mf)."""
    if cfg.user_model == "mf":
        return None
    if not cfg.llm_user_calibration:
        raise ValueError(f"user_model={cfg.user_model} needs an LLM user calibration (--llm-user-calibration FILE, "
                         "or an entry point that makes one: python -m learner.evaluate --eval-user-model ...)")
    if client is None:
        raise ValueError(f"user_model={cfg.user_model} needs the LLM service's address (--llm-user-address)")
    calibration = Calibration.load(cfg.llm_user_calibration)
    llm_user = LLMUser(client, world.category_names, cfg.llm_user_timeout_s,
                       ResponseCache(cache_path or answers_path(), calibration.model_tag))
    env.responder = WorldResponder(world, cfg, calibration, llm_user)
    return env.responder
