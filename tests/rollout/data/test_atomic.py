"""RecBole atomic files (rollout/data/atomic.py): files the tests write, every malformed one refused
naming the file, line and field; and MovieLens-100K as the recbole wheel ships it, against
GroupLens' own files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rollout.data.atomic import AtomicOptions, load_atomic
from rollout.data.dataset import DataError
from rollout.data.movielens import load_movielens_100k
from rollout.data.registry import embedded_ml100k, load_dataset

SHARED_ML100K = Path(__file__).resolve().parents[4] / "shared" / "data" / "ml-100k"

INTER = ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
         "u1\tb\t4\t30", "u1\ta\t2\t10", "u2\ta\t5\t20", "u10\tc\t1\t5"]
ITEM = ["item_id:token\tmovie_title:token_seq\tclass:token_seq", "a\tAlpha Film\tDrama Comedy",
        "b\tBeta Film\tComedy", "c\tGamma Film\t"]
USER = ["user_id:token\tage:float\tgender:token", "u1\t31\tF", "u2\t45\tM"]


def write(folder: Path, name: str = "toy", inter=INTER, item=ITEM, user=USER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix, lines in (("inter", inter), ("item", item), ("user", user)):
        if lines is not None:
            (folder / f"{name}.{suffix}").write_text("\n".join(lines) + "\n")
    return folder


def test_reads_interactions_categories_titles_and_user_features(tmp_path):
    data = load_atomic(write(tmp_path / "toy"))
    assert data.name == "toy" and data.feedback == "rating" and data.rating_scale == (1.0, 5.0)
    assert data.category_names == ["Drama", "Comedy", "unknown"]  # first appearance; no category: unknown
    assert data.item_titles == ["Alpha Film", "Beta Film", "Gamma Film"]
    assert data.item_category.tolist() == [0, 1, 2]  # an item's first token is its primary category
    assert data.item_category_matrix.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    assert data.user_raw_ids.tolist() == ["u1", "u10", "u2"]  # text ids sort as text
    it = data.interactions  # per user in time order
    assert list(zip(it.user.tolist(), it.item.tolist(), it.label.tolist(), it.timestamp.tolist())) == [
        (0, 0, 2.0, 10), (0, 1, 4.0, 30), (1, 2, 1.0, 5), (2, 0, 5.0, 20)]
    assert data.user_features["age"].tolist()[0] == 31.0 and np.isnan(data.user_features["age"][1])
    assert data.user_features["gender"].tolist() == ["F", "", "M"]  # u10 has no .user row


def test_clicks_a_chosen_category_field_and_threshold(tmp_path):
    inter = ["user_id:token\titem_id:token\tclick:float", "1\t1\t1", "1\t2\t0", "2\t1\t0"]
    item = ["item_id:token\tgenre:token\tcolour:token", "1\tx\tred", "2\ty\tblue"]
    folder = write(tmp_path / "clicks", "clicks", inter, item, None)
    data = load_atomic(folder)
    assert data.feedback == "click" and data.category_names == ["x", "y"]
    assert data.interactions.timestamp.tolist() == [0, 1, 2]  # no timestamp: file order
    assert not data.user_features
    data = load_atomic(folder, AtomicOptions(category_field="colour", positive_threshold=1.0))
    assert data.category_names == ["red", "blue"] and data.positive().tolist() == [True, False, False]


@pytest.mark.parametrize("change, message", [
    (("inter", 0, "user_id\titem_id:token\trating:float"), "toy.inter: line 1: header column 'user_id'"),
    (("inter", 2, "u1\ta\t2"), "toy.inter: line 3: expected 4 tab-separated fields"),
    (("inter", 3, "u2\ta\tfive\t20"), "toy.inter: line 4: field rating must be a number, got 'five'"),
    (("inter", 4, "u10\tz\t1\t5"), "toy.inter: line 5: item_id 'z' is not in toy.item"),
    (("item", 2, "a\tAgain\tDrama"), "toy.item: line 3: item_id 'a' appears twice"),
    (("user", 0, "user_id:token\tage:float\tgender:colour"), "toy.user: line 1: header column 'gender:colour'"),
])
def test_malformed_files_are_refused_naming_file_line_and_field(tmp_path, change, message):
    files = {"inter": list(INTER), "item": list(ITEM), "user": list(USER)}
    kind, line, text = change
    files[kind][line] = text
    folder = write(tmp_path / "toy", "toy", files["inter"], files["item"], files["user"])
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        load_atomic(folder)


def test_an_item_file_without_categories_says_how_to_name_them(tmp_path):
    item = ["item_id:token\ttitle:token_seq\tprice:float", "a\tAlpha\t1", "b\tBeta\t2", "c\tGamma\t3"]
    with pytest.raises(DataError, match="toy.item: no token or token_seq column to take categories from .*"
                                        "--atomic-category-field"):
        load_atomic(write(tmp_path / "toy", item=item))


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(DataError, match=r"missing .*toy\.inter"):
        load_atomic(tmp_path / "toy")
    folder = write(tmp_path / "toy", inter=[INTER[0]])
    with pytest.raises(DataError, match="toy.inter: the file has a header but no rows"):
        load_atomic(folder)
    with pytest.raises(DataError, match="no field 'stars' for the feedback field"):
        load_atomic(write(tmp_path / "toy"), AtomicOptions(feedback_field="stars"))


needs_embedded = pytest.mark.skipif(embedded_ml100k() is None, reason="the recbole wheel (scripts/setup.sh installs "
                                    "it) is not installed, so there is no embedded MovieLens-100K")


@needs_embedded
@pytest.mark.skipif(not (SHARED_ML100K / "u.data").is_file(), reason="GroupLens' MovieLens-100K is not in ../shared/data")
def test_the_embedded_copy_is_grouplens_movielens_100k():
    embedded = load_dataset("ml-100k", embedded_ml100k())
    grouplens = load_movielens_100k(SHARED_ML100K)
    for field in ("user", "item", "label", "timestamp"):
        np.testing.assert_array_equal(getattr(embedded.interactions, field), getattr(grouplens.interactions, field))
    assert embedded.category_names == grouplens.category_names
    np.testing.assert_array_equal(embedded.item_category_matrix, grouplens.item_category_matrix)
    np.testing.assert_array_equal(embedded.item_category, grouplens.item_category)
    np.testing.assert_array_equal(embedded.item_raw_ids, grouplens.item_raw_ids)
    np.testing.assert_array_equal(embedded.user_raw_ids, grouplens.user_raw_ids)
    assert embedded.fingerprint() == grouplens.fingerprint()  # one user model serves both
    assert embedded.item_titles[0] == grouplens.item_titles[0] == "Toy Story (1995)"
    assert set(embedded.user_features) == {"age", "gender", "occupation", "zip_code"}
    assert embedded.user_features["occupation"][0] == "technician"


@needs_embedded
def test_ml100k_with_no_folder_and_no_download_reads_the_embedded_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("LLMREC_CACHE_DIR", str(tmp_path / "empty-cache"))
    data = load_dataset("ml-100k")
    assert (data.num_users, data.num_items, len(data.interactions)) == (943, 1682, 100_000)
    assert data.source == f"embedded: {embedded_ml100k()}"


def write_random_atomic(folder: Path, name: str, users: int = 40, items: int = 60, rows: int = 1500) -> dict:
    """A data set none of the loaders has seen: ratings 1-5, three genres as token_seq, user features."""
    rng = np.random.default_rng(0)
    pairs = rng.choice(users * items, size=rows, replace=False)
    inter = ["uid:token\tiid:token\tstars:float\ttimestamp:float"] + [
        f"user{p // items}\titem{p % items}\t{rng.integers(1, 6)}\t{1000 + k}" for k, p in enumerate(pairs)]
    genres = ["Jazz", "Rock", "Folk"]
    item = ["iid:token\tname:token_seq\tgenre:token_seq"] + [
        f"item{i}\tSong {i}\t{genres[i % 3]}{' ' + genres[(i + 1) % 3] if i % 4 == 0 else ''}" for i in range(items)]
    user = ["uid:token\tcountry:token"] + [f"user{u}\t{'FR' if u % 2 else 'JP'}" for u in range(users)]
    write(folder, name, inter, item, user)
    return {"users": len({p // items for p in pairs}), "items": items, "categories": 3, "interactions": rows}


def test_an_unseen_data_set_trains_with_one_command_and_its_data_card_is_right(tmp_path):
    from learner.main import cli

    folder = tmp_path / "songs"
    expected = write_random_atomic(folder, "tracks")
    run_dir = tmp_path / "run"
    code = cli(["--dataset", "atomic", "--data-dir", str(folder), "--atomic-name", "tracks", "--atomic-feedback-field",
                "stars", "--serial", "true", "--planner-backend", "heuristic", "--iterations", "2",
                "--users-per-actor", "8", "--plan-categories", "2", "--plan-pool", "3", "--eval-users", "8",
                "--user-model-epochs", "2", "--run-dir", str(run_dir)])
    assert code == 0
    card = json.loads((run_dir / "data.json").read_text())
    assert {key: card[key] for key in expected} == expected
    assert card["dataset"] == "tracks" and card["source"] == f"directory: {folder}" and card["feedback"] == "rating"
    assert card["user_features"] == ["country"]
    assert 0.0 < card["positive_rate"] < 1.0 and 0.0 <= card["user_model"]["auc"] <= 1.0
    # The users' dynamics, each default with where it comes from; the logs' own repeat statistics.
    assert card["dynamics"]["quit_rule"] == "interest"
    assert all(s["source"] for k, s in card["dynamics"].items() if isinstance(s, dict))
    assert set(card["logs"]) == {"same_timestamp_share", "category_repeat_ratio"}
    assert json.loads((run_dir / "eval.json").read_text())["trained"]["episodes"] == 8


def test_a_malformed_atomic_file_ends_the_run_with_one_line_before_anything_starts(tmp_path, capsys):
    from learner.main import cli

    folder = tmp_path / "songs"
    write_random_atomic(folder, "tracks")
    lines = (folder / "tracks.inter").read_text().splitlines()
    lines[7] = lines[7].replace("\t", " ", 1)
    (folder / "tracks.inter").write_text("\n".join(lines) + "\n")
    code = cli(["--dataset", "atomic", "--data-dir", str(folder), "--atomic-name", "tracks", "--serial", "true",
                "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "tracks.inter: line 8: expected 4 tab-separated fields" in err
    assert not (tmp_path / "run").exists()
