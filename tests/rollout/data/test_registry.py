"""`load_dataset`: name to loader, default folders, and the messages when data is missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rollout.data.dataset import DataError
from rollout.data import registry
from rollout.data.registry import DATASETS, load_dataset, resolve_data_dir

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


@pytest.fixture
def no_default_dirs(tmp_path, monkeypatch):
    """Point $HOME and $LLMREC_DATA_DIR at empty folders so the user's real cache is never read."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMREC_DATA_DIR", raising=False)
    return tmp_path


def test_names():
    assert DATASETS == ("synthetic", "ml-100k", "kuairand-pure", "kuairec", "atomic")


def test_unknown_name_lists_datasets():
    with pytest.raises(ValueError, match="unknown data set 'ml-1m'.*synthetic, ml-100k, kuairand-pure, kuairec, atomic"):
        load_dataset("ml-1m")


def test_synthetic_dispatch(monkeypatch):
    """'synthetic' goes to rollout.data.synthetic.synthetic_dataset with the options (stubbed here)."""
    calls = []
    generated = object()
    monkeypatch.setattr(registry, "synthetic_dataset", lambda **options: calls.append(options) or generated)
    assert load_dataset("synthetic", num_items=50, seed=3) is generated
    assert calls == [{"num_items": 50, "seed": 3}]


@pytest.mark.parametrize("name", ["ml-100k", "kuairand-pure", "kuairec"])
def test_not_found_says_where_and_how(no_default_dirs, monkeypatch, name):
    monkeypatch.setenv("LLMREC_DATA_DIR", str(no_default_dirs / "data"))
    monkeypatch.setattr(registry, "embedded_ml100k", lambda: None)  # as without the recbole wheel
    with pytest.raises(DataError) as err:
        load_dataset(name)
    msg = str(err.value)
    assert str(no_default_dirs / "data" / name) in msg
    assert str(no_default_dirs / "home" / ".cache" / "llmrec-rl" / name) in msg
    assert ("python -m rollout.data.download ml-100k" if name == "ml-100k" else "https://kuai") in msg


def test_default_folders_in_order(no_default_dirs, monkeypatch):
    cache = no_default_dirs / "home" / ".cache" / "llmrec-rl" / "ml-100k"
    cache.mkdir(parents=True)
    assert resolve_data_dir("ml-100k", None) == cache
    env_dir = no_default_dirs / "data" / "ml-100k"
    env_dir.mkdir(parents=True)
    monkeypatch.setenv("LLMREC_DATA_DIR", str(no_default_dirs / "data"))
    assert resolve_data_dir("ml-100k", None) == env_dir


def test_explicit_dir_or_its_parent(tmp_path):
    (tmp_path / "kuairec").mkdir()
    assert resolve_data_dir("kuairec", tmp_path) == tmp_path / "kuairec"
    assert resolve_data_dir("kuairec", tmp_path / "kuairec") == tmp_path / "kuairec"
    with pytest.raises(DataError, match=r"missing .*item_categories\.csv"):
        load_dataset("kuairec", tmp_path)


def test_loads_ml100k_from_env(no_default_dirs, monkeypatch):
    if not (SHARED_DATA / "ml-100k" / "u.data").is_file():
        pytest.skip(f"MovieLens-100K test files not found at {SHARED_DATA / 'ml-100k'}")
    monkeypatch.setenv("LLMREC_DATA_DIR", str(SHARED_DATA))
    ds = load_dataset("ml-100k")
    assert ds.name == "ml-100k" and ds.num_items == 1682
    assert load_dataset("ml-100k", SHARED_DATA / "ml-100k").num_users == 943


def test_options_reach_the_loader(tmp_path):
    if not (SHARED_DATA / "kuairec" / "item_categories.csv").is_file():
        pytest.skip(f"KuaiRec side files not found at {SHARED_DATA / 'kuairec'}")
    for name in ("item_categories.csv", "kuairec_caption_category.csv", "user_features.csv"):
        shutil.copy(SHARED_DATA / "kuairec" / name, tmp_path / name)
    (tmp_path / "big_matrix.csv").write_text(
        "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"
        "0,0,5000,8000,2020-07-05 05:27:48.378,20200705.0,1593897668.378,1.5\n")
    ds = load_dataset("kuairec", tmp_path, matrix="big_matrix.csv", click_watch_ratio=1.0)
    assert list(ds.interactions.label) == [1.0]
