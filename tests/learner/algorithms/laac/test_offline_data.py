"""LAAC's offline data: logged interactions as (state, action, reward, done) in time order per
user, held-out users split by seed, cached once as Parquet and read memory-mapped."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learner.algorithms.laac.offline_data import build_transitions, cli, load_or_build
from rollout.data.dataset import Dataset, Interactions

SHARED_ML100K = Path(__file__).resolve().parents[5] / "shared" / "data" / "ml-100k"


def _dataset() -> Dataset:
    # user 0: items 5, 6, 7 at times 3, 1, 2 (so in time order 6, 7, 5); user 1: items 1, 2
    inter = Interactions(user=np.array([0, 0, 0, 1, 1], np.int32), item=np.array([5, 6, 7, 1, 2], np.int32),
                         label=np.array([5, 3, 4, 1, 2], np.float32), timestamp=np.array([3, 1, 2, 10, 11]))
    n_items = 8
    categories = np.zeros((n_items, 2), bool)
    categories[:, 0] = True
    return Dataset(name="tiny", category_names=["a", "b"], item_category=np.zeros(n_items, np.int32),
                   item_category_matrix=categories,
                   item_titles=[""] * n_items, item_raw_ids=np.arange(n_items), user_raw_ids=np.arange(2),
                   interactions=inter, feedback="rating")


def test_transitions_follow_each_users_time_order() -> None:
    table = build_transitions(_dataset(), history_len=2)
    rows = table.to_pylist()
    assert [(r["user_id"], r["step"], r["state_items"], r["action"], r["reward"], r["done"]) for r in rows] == [
        (0, 1, [-1, 6], 7, 4.0, False),
        (0, 2, [6, 7], 5, 5.0, True),
        (1, 1, [-1, 1], 2, 2.0, True),
    ]
    assert rows[1]["state_labels"] == [3.0, 4.0] and {r["split"] for r in rows} == {"train"}


def test_cached_once_and_read_memory_mapped(tmp_path: Path) -> None:
    first, path = load_or_build(_dataset(), history_len=2, eval_users=[1], cache_dir=tmp_path)
    mtime = path.stat().st_mtime_ns
    again, same = load_or_build(_dataset(), history_len=2, eval_users=[1], cache_dir=tmp_path)
    assert same == path and path.stat().st_mtime_ns == mtime and again.equals(first)
    other, other_path = load_or_build(_dataset(), history_len=3, eval_users=[1], cache_dir=tmp_path)
    assert other_path != path and other.schema.field("state_items").type.list_size == 3
    assert {r["user_id"]: r["split"] for r in first.to_pylist()} == {0: "train", 1: "test"}
    _, split_path = load_or_build(_dataset(), history_len=2, eval_users=[0], cache_dir=tmp_path)
    assert split_path not in (path, other_path)  # another split is another table
    with pytest.raises(ValueError, match="history_len must be >= 1"):
        build_transitions(_dataset(), history_len=0)


@pytest.mark.skipif(not SHARED_ML100K.is_dir(), reason="the shared MovieLens-100K copy (../shared/data) is not here")
def test_movielens_has_one_transition_per_interaction_after_each_users_first(capsys) -> None:
    assert cli(["--dataset", "ml-100k", "--data-dir", str(SHARED_ML100K)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("99,057 transitions") and "943 users and 1,682 items" in out
