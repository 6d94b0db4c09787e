"""KuaiRec loader: small files in the published format, and the real side files with a test matrix."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rollout.data.dataset import DataError
from rollout.data.kuairec import load_kuairec

SHARED_KUAIREC = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "kuairec"
MATRIX_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio"
CAPTION_HEADER = ("video_id,manual_cover_text,caption,topic_tag,first_level_category_id,first_level_category_name,"
                  "second_level_category_id,second_level_category_name,third_level_category_id,"
                  "third_level_category_name")


def _matrix_row(user: int, video: int, timestamp: float | None, watch_ratio: float) -> str:
    if timestamp is None:  # the small matrix's stage-2 rows have no time
        return f"{user},{video},5000,8000,,,,{watch_ratio}"
    return f"{user},{video},5000,8000,2020-07-05 05:27:48.378,20200705.0,{timestamp},{watch_ratio}"


def _write_matrix(path: Path, rows: list[tuple]) -> None:
    path.write_text("\n".join([MATRIX_HEADER, *(_matrix_row(*r) for r in rows)]) + "\n")


def _write_side_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "item_categories.csv").write_text('video_id,feat\n0,[8]\n1,"[27, 9]"\n2,[]\n3,[5]\n')
    # Quirks of the published file: UNKNOWN text, -124 ids, a bare carriage return inside a caption.
    (folder / "kuairec_caption_category.csv").write_bytes("\n".join([
        CAPTION_HEADER,
        "0,UNKNOWN,精神小伙路难走,[],8,颜值,673,颜值随拍,-124,UNKNOWN",
        "1,封面文字,,[],27,高新数码,-124,UNKNOWN,-124,UNKNOWN",
        "2,UNKNOWN,这才是每个小女生心中的豪车！\r ,[],-124,UNKNOWN,-124,UNKNOWN,-124,UNKNOWN",
        "3,UNKNOWN,UNKNOWN,[],5,时尚,1,x,-124,UNKNOWN",
        "",
    ]).encode("utf-8"))
    (folder / "user_features.csv").write_text("user_id,user_active_degree\n0,high_active\n1,full_active\n")
    return folder


def test_small_files(tmp_path):
    folder = _write_side_files(tmp_path)
    _write_matrix(folder / "small_matrix.csv", [
        (1, 3, 1593878900.5, 0.4), (0, 1, 1593879000.9, 2.5), (0, 0, 1593878000.0, 2.0), (1, 2, None, 3.0)])
    ds = load_kuairec(folder)
    assert ds.name == "kuairec" and ds.feedback == "click"
    # feat ids 5, 8, 9, 27 in numeric order; 9 has no first-level row naming it, so it keeps its number.
    assert ds.category_names == ["时尚", "颜值", "category 9", "高新数码", "unknown"]
    # Video 1 ("[27, 9]") has both categories, 27 primary; video 2 ("[]") is "unknown".
    assert ds.item_category_matrix[1].tolist() == [False, False, True, True, False]
    assert list(ds.item_category) == [1, 3, 4, 0]
    assert ds.item_titles == ["精神小伙路难走", "封面文字", "这才是每个小女生心中的豪车！", ""]
    it = ds.interactions
    assert list(it.user) == [0, 0, 1, 1]
    assert list(it.item) == [0, 1, 2, 3]  # user 1's untimed row (timestamp -1) sorts first
    assert list(it.timestamp) == [1593878000, 1593879000, -1, 1593878900]
    assert list(it.label) == [1.0, 1.0, 1.0, 0.0]  # watch_ratio >= 2.0
    assert list(ds.extra["timed"]) == [True, True, False, True]
    assert np.allclose(ds.extra["watch_ratio"], [2.0, 2.5, 3.0, 0.4])
    assert {k: list(v) for k, v in ds.user_features.items()} == {"user_active_degree": ["high_active", "full_active"]}


def test_options(tmp_path):
    folder = _write_side_files(tmp_path)
    _write_matrix(folder / "big_matrix.csv", [(0, 0, 1.0, 1.5), (1, 2, None, 3.0)])
    ds = load_kuairec(folder, matrix="big_matrix.csv", click_watch_ratio=1.0, untimed="drop")
    assert len(ds.interactions) == 1 and list(ds.interactions.label) == [1.0]
    with pytest.raises(ValueError, match="untimed"):
        load_kuairec(folder, matrix="big_matrix.csv", untimed="sometimes")


def test_missing_matrix_names_expected_files(tmp_path):
    folder = _write_side_files(tmp_path)
    with pytest.raises(DataError) as err:
        load_kuairec(folder)
    msg = str(err.value)
    assert "small_matrix.csv" in msg and "big_matrix.csv" in msg and "not enough to train a user model" in msg


def test_missing_side_file(tmp_path):
    folder = _write_side_files(tmp_path)
    (folder / "kuairec_caption_category.csv").unlink()
    with pytest.raises(DataError, match=r"missing .*kuairec_caption_category\.csv"):
        load_kuairec(folder)


def test_malformed_files(tmp_path):
    folder = _write_side_files(tmp_path)
    _write_matrix(folder / "small_matrix.csv", [(0, 0, 1.0, 1.5), (0, 99, 2.0, 1.0)])
    with pytest.raises(DataError, match=r"small_matrix\.csv: line 3: video_id 99 is not in .*item_categories\.csv"):
        load_kuairec(folder)
    (folder / "small_matrix.csv").write_text("user_id,video_id,timestamp\n0,0,1.0\n")
    with pytest.raises(DataError, match=r"small_matrix\.csv: expected columns .*missing watch_ratio"):
        load_kuairec(folder)
    _write_matrix(folder / "small_matrix.csv", [(0, 0, 1.0, 1.5)])
    (folder / "item_categories.csv").write_text("video_id,feat\n0,[8]\n1,[x]\n")
    with pytest.raises(DataError, match=r"item_categories\.csv: line 3: feat must be a list of integer"):
        load_kuairec(folder)


def test_real_side_files_with_test_matrix(tmp_path):
    if not (SHARED_KUAIREC / "item_categories.csv").is_file():
        pytest.skip(f"KuaiRec side files not found at {SHARED_KUAIREC}")
    for name in ("item_categories.csv", "kuairec_caption_category.csv", "user_features.csv"):
        shutil.copy(SHARED_KUAIREC / name, tmp_path / name)
    rng = np.random.default_rng(0)
    n = 600
    users, videos = rng.integers(0, 7176, n), rng.integers(0, 10728, n)
    times, ratios = rng.uniform(1593878400, 1599000000, n), rng.exponential(1.0, n)
    _write_matrix(tmp_path / "small_matrix.csv",
                  [(int(u), int(v), None if i % 10 == 0 else float(t), float(w))
                   for i, (u, v, t, w) in enumerate(zip(users, videos, times, ratios))])
    ds = load_kuairec(tmp_path)
    assert (ds.num_items, ds.num_users, len(ds.interactions)) == (10728, 7176, n)
    # User 0 of the published file: high_active, 5 followed, registered 107 days ago.
    assert len(ds.user_features) == 12 and ds.user_features["user_active_degree"][0] == "high_active"
    assert (ds.user_features["follow_user_num"][0], ds.user_features["register_days"][0]) == (5, 107)
    assert ds.num_categories == 31  # feat ids 0..30; every video has at least one
    # Names from the caption file where its ids agree with feat ids; numbers where they do not.
    names = ds.category_names
    assert names[8] == "颜值" and names[1] == "舞蹈" and names[28] == "民生资讯"
    assert names[0] == "category 0" and names[23] == "category 23" and names[30] == "category 30"
    # Video 1 is published with feat "[27, 9]": both categories, 27 primary.
    assert np.flatnonzero(ds.item_category_matrix[1]).tolist() == [9, 27] and ds.item_category[1] == 27
    assert ds.item_titles[0] == "精神小伙路难走 程哥你狗粮慢点撒"
    # Video 1378's caption holds a bare carriage return in the published file: still one row, one title.
    assert ds.item_titles[1378].startswith("张凯教练") and "\r" not in ds.item_titles[1378]
    assert ds.positive().sum() == int((ratios >= 2.0).sum())
    assert int((ds.interactions.timestamp == -1).sum()) == n // 10
