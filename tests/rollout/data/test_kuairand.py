"""KuaiRand-Pure loader: small files in the published format, and the real side files with a test log."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rollout.data.dataset import DataError
from rollout.data.kuairand import STANDARD_LOGS, load_kuairand_pure

SHARED_KUAIRAND = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "kuairand-pure"

LOG_HEADER = ("user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
              "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab")
VIDEO_HEADER = ("video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,server_width,"
                "server_height,music_id,music_type,tag")


def _log_row(user: int, video: int, time_ms: int, click: int) -> str:
    return f"{user},{video},20220408,1000.0,{time_ms},{click},0,0,0,0,0,{click},1200,8000,0,0,0,0,1"


def _write_log(path: Path, rows: list[tuple[int, int, int, int]]) -> None:
    path.write_text("\n".join([LOG_HEADER, *(_log_row(*r) for r in rows)]) + "\n")


def _write_side_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    videos = [(10, "39"), (11, '"20,43"'), (12, ""), (13, "20")]
    (folder / "video_features_basic_pure.csv").write_text("\n".join(
        [VIDEO_HEADER, *(f"{v},7349781,NORMAL,2022-04-10,LongImport,0.0,87433.0,720.0,1280.0,9155697141,9.0,{t}"
                         for v, t in videos)]) + "\n")
    (folder / "user_features_pure.csv").write_text(
        "user_id,user_active_degree,is_lowactive_period\n5,high_active,1\n0,full_active,0\n")  # not in id order
    return folder


def test_small_files(tmp_path):
    folder = _write_side_files(tmp_path)
    _write_log(folder / STANDARD_LOGS[0], [(5, 11, 1_650_000_002_500, 1), (0, 10, 1_650_000_009_000, 0),
                                          (5, 13, 1_650_000_001_000, 0)])
    _write_log(folder / STANDARD_LOGS[1], [(0, 12, 1_650_000_000_000, 1)])
    ds = load_kuairand_pure(folder)
    assert ds.name == "kuairand-pure" and ds.feedback == "click"
    assert ds.category_names == ["tag 20", "tag 39", "tag 43", "unknown"]
    assert list(ds.item_raw_ids) == [10, 11, 12, 13] and list(ds.user_raw_ids) == [0, 5]
    # Multi-tag video 11 has both tags, the first listed being primary; the untagged one is "unknown".
    assert ds.item_category_matrix.tolist() == [[False, True, False, False], [True, False, True, False],
                                                [False, False, False, True], [True, False, False, False]]
    assert list(ds.item_category) == [1, 0, 3, 0]
    it = ds.interactions
    assert list(it.user) == [0, 0, 1, 1]
    assert list(it.item) == [2, 0, 3, 1]  # both logs merged, each user in time order
    assert list(it.timestamp) == [1_650_000_000, 1_650_000_009, 1_650_000_001, 1_650_000_002]
    assert list(it.label) == [1.0, 0.0, 0.0, 1.0]
    assert ds.item_titles == [""] * 4
    # The named user columns the file has, typed and in the dense users' order; absent ones skipped.
    assert set(ds.user_features) == {"user_active_degree", "is_lowactive_period"}
    assert list(ds.user_features["user_active_degree"]) == ["full_active", "high_active"]
    assert ds.user_features["is_lowactive_period"].dtype == np.float32
    assert list(ds.user_features["is_lowactive_period"]) == [0.0, 1.0]


def test_standard_logs_only_by_default(tmp_path):
    folder = _write_side_files(tmp_path)
    _write_log(folder / STANDARD_LOGS[1], [(0, 10, 1_650_000_000_000, 1)])
    _write_log(folder / "log_random_4_22_to_5_08_pure.csv", [(5, 12, 1_650_000_000_000, 1)])
    assert len(load_kuairand_pure(folder).interactions) == 1
    both = load_kuairand_pure(folder, log_files=[STANDARD_LOGS[1], "log_random_4_22_to_5_08_pure.csv"])
    assert len(both.interactions) == 2


def test_published_archive_layout(tmp_path):
    """The archive unpacks to KuaiRand-Pure/data/*.csv; pointing at KuaiRand-Pure/ works too."""
    folder = _write_side_files(tmp_path / "data")
    _write_log(folder / STANDARD_LOGS[0], [(0, 10, 1_650_000_000_000, 1)])
    assert len(load_kuairand_pure(tmp_path).interactions) == 1


def test_missing_log_names_expected_files(tmp_path):
    folder = _write_side_files(tmp_path)
    with pytest.raises(DataError) as err:
        load_kuairand_pure(folder)
    msg = str(err.value)
    assert all(name in msg for name in STANDARD_LOGS) and "not enough to train a user model" in msg


def test_missing_side_file(tmp_path):
    folder = _write_side_files(tmp_path)
    (folder / "user_features_pure.csv").unlink()
    with pytest.raises(DataError, match=r"missing .*user_features_pure\.csv"):
        load_kuairand_pure(folder)


def test_asked_for_log_missing(tmp_path):
    folder = _write_side_files(tmp_path)
    with pytest.raises(DataError, match=r"missing log file .*log_random_4_22_to_5_08_pure\.csv"):
        load_kuairand_pure(folder, log_files=["log_random_4_22_to_5_08_pure.csv"])


def test_malformed_log(tmp_path):
    folder = _write_side_files(tmp_path)
    log = folder / STANDARD_LOGS[0]
    log.write_text(LOG_HEADER + "\n" + _log_row(0, 10, 1, 1) + "\n0,10,oops\n")
    with pytest.raises(DataError, match=rf"{STANDARD_LOGS[0]}"):
        load_kuairand_pure(folder)
    log.write_text("user_id,video_id,is_click\n0,10,1\n")
    with pytest.raises(DataError, match=r"missing time_ms"):
        load_kuairand_pure(folder)
    _write_log(log, [(0, 10, 1, 1), (3, 10, 2, 0)])
    with pytest.raises(DataError, match=r"line 3: user_id 3 is not in .*user_features_pure\.csv"):
        load_kuairand_pure(folder)


def test_bad_tag(tmp_path):
    folder = _write_side_files(tmp_path)
    path = folder / "video_features_basic_pure.csv"
    path.write_text(path.read_text().replace(",39\n", ",thirty\n"))
    _write_log(folder / STANDARD_LOGS[0], [(0, 10, 1, 1)])
    with pytest.raises(DataError, match=r"video_features_basic_pure\.csv: line 2: tag must be"):
        load_kuairand_pure(folder)


def test_real_side_files_with_test_log(tmp_path):
    if not (SHARED_KUAIRAND / "video_features_basic_pure.csv").is_file():
        pytest.skip(f"KuaiRand-Pure side files not found at {SHARED_KUAIRAND}")
    for name in ("video_features_basic_pure.csv", "user_features_pure.csv"):
        shutil.copy(SHARED_KUAIRAND / name, tmp_path / name)
    rng = np.random.default_rng(0)
    rows = [(int(u), int(v), int(t), int(c)) for u, v, t, c in zip(
        rng.integers(0, 27285, 500), rng.integers(0, 7583, 500),
        rng.integers(1_649_376_000_000, 1_650_500_000_000, 500), rng.integers(0, 2, 500))]
    _write_log(tmp_path / STANDARD_LOGS[0], rows)
    ds = load_kuairand_pure(tmp_path)
    assert (ds.num_items, ds.num_users, len(ds.interactions)) == (7583, 27285, 500)
    # User 0 of the published file: full_active, 514 followed, registered 799 days ago.
    assert len(ds.user_features) == 12 and ds.user_features["user_active_degree"][0] == "full_active"
    assert (ds.user_features["follow_user_num"][0], ds.user_features["register_days"][0]) == (514, 799)
    assert ds.category_names[-1] == "unknown" and all(n.startswith("tag ") for n in ds.category_names[:-1])
    # Video 1 is tagged "2" in the published file; multi-tag videos carry every tag.
    assert ds.category_names[ds.item_category[1]] == "tag 2"
    assert ds.item_category_matrix.sum(axis=1).max() >= 2
    multi = int(np.flatnonzero(ds.item_category_matrix.sum(axis=1) >= 2)[0])
    assert ds.item_category_matrix[multi, ds.item_category[multi]]
    it = ds.interactions
    assert np.all(np.diff(it.user) >= 0) and np.all(np.diff(it.timestamp)[np.diff(it.user) == 0] >= 0)
    assert it.label.sum() == sum(r[3] for r in rows)
