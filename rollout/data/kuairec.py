"""KuaiRec loader: Kuaishou's fully observed `small_matrix.csv` (or `big_matrix.csv`) into a `Dataset`.

KuaiRec is the data set DORL's quit rule was designed on. Categories are the `feat` lists of
`item_categories.csv` (what DORL counts); names and captions come from
`kuairec_caption_category.csv`. The interaction matrices are large and not bundled (users
download them from https://kuairec.com); the side files are read as published, quirks included.
"""
from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from rollout.data.dataset import DataError, Dataset, Interactions
from rollout.data.kuairand import (
    category_table,
    dense_ids,
    find_file,
    kuaishou_user_features,
    read_csv_columns,
    unique_ids,
)

KUAIREC_URL = "https://kuairec.com"
ITEM_FILE = "item_categories.csv"
CAPTION_FILE = "kuairec_caption_category.csv"
USER_FILE = "user_features.csv"
MATRICES = ("small_matrix.csv", "big_matrix.csv")
# Kuaishou's placeholders for "no value" in the caption file.
_UNKNOWN_IDS = {"", "-124"}
_UNKNOWN_TEXT = {"", "UNKNOWN"}
# The catch-all first-level categories: they say nothing about which tag an item carries.
_CATCH_ALL_NAMES = {"UNKNOWN", "其他"}


def _parse_feat(path: Path, line: int, feat: str) -> list[int]:
    """'[8]' -> [8], '[27, 9]' -> [27, 9], '[]' or '' -> []."""
    body = feat.strip()
    if not (body.startswith("[") and body.endswith("]")) and body:
        raise DataError(f"{path}: line {line}: feat must be a list of category ids like [8] or [27, 9], got {feat!r}")
    try:
        return [int(t) for t in body.strip("[]").split(",") if t.strip()]
    except ValueError:
        raise DataError(f"{path}: line {line}: feat must be a list of integer category ids, got {feat!r}") from None


def _read_item_categories(path: Path) -> tuple[np.ndarray, list[list[int]]]:
    """Raw video ids (sorted) and each one's category id list from `item_categories.csv`."""
    cols = read_csv_columns(path, {"video_id": pa.int64(), "feat": pa.string()})
    raw = unique_ids(path, "video_id", cols["video_id"])
    feats = [_parse_feat(path, i + 2, f) for i, f in enumerate(cols["feat"].tolist())]
    return raw, [feats[j] for j in np.argsort(cols["video_id"], kind="stable")]


def _read_captions(path: Path) -> dict[int, list[str]]:
    """video_id -> [manual_cover_text, caption, first-level id, first-level name] from the caption file.

    The published file has bare carriage returns inside unquoted captions (4 rows), which every
    CSV reader takes for line ends; they are turned into spaces before parsing.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text: {exc}") from exc
    rows = csv.reader(io.StringIO(text.replace("\r\n", "\n").replace("\r", " "), newline=""))
    header = next(rows, [])
    wanted = ("video_id", "manual_cover_text", "caption", "first_level_category_id", "first_level_category_name")
    missing = [c for c in wanted if c not in header]
    if missing:
        raise DataError(f"{path}: expected columns {', '.join(wanted)}; missing {', '.join(missing)}")
    index = [header.index(c) for c in wanted]
    out: dict[int, list[str]] = {}
    for lineno, row in enumerate(rows, 2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}: record {lineno}: expected {len(header)} comma-separated fields, got {len(row)}")
        try:
            out[int(row[index[0]])] = [row[i] for i in index[1:]]
        except ValueError:
            raise DataError(f"{path}: record {lineno}: video_id must be an integer, got {row[index[0]]!r}") from None
    return out


def _category_names(item_raw: np.ndarray, item_tags: list[list[int]],
                    captions: dict[int, list[str]]) -> dict[int, str]:
    """Name each feat id after the first-level category with the same id, where the items agree.

    The two files share most ids (feat 8 and first-level 8 are both 颜值) but not all: the items
    tagged feat 23 are mostly first-level 21 (人文), not 23 (时政资讯), and first-level 30 does not
    exist. So feat k takes the name of first-level k only when k is the most common first-level
    id among the items tagged k (catch-all "其他"/UNKNOWN not counted); otherwise the caller
    falls back to "category <k>" rather than print a wrong name into an LLM prompt.
    """
    id_to_name: dict[int, str] = {}
    votes: dict[int, Counter] = defaultdict(Counter)
    for vid, tags in zip(item_raw.tolist(), item_tags):
        row = captions.get(vid)
        if row is None or row[2].strip() in _UNKNOWN_IDS:
            continue
        try:
            level1 = int(row[2])
        except ValueError:
            continue
        name = row[3].strip()
        if name in _CATCH_ALL_NAMES:
            continue
        id_to_name.setdefault(level1, name)
        for t in tags:
            votes[t][level1] += 1
    names = {}
    for tag, counter in votes.items():
        top, _ = counter.most_common(1)[0]
        if top == tag and tag in id_to_name:
            names[tag] = id_to_name[tag]
    return names


def _title(row: list[str] | None) -> str:
    """The caption, else the cover text, else "" (Kuaishou writes UNKNOWN for missing text)."""
    if row is None:
        return ""
    for text in (row[1], row[0]):
        text = " ".join(text.split())
        if text not in _UNKNOWN_TEXT:
            return text
    return ""


def load_kuairec(data_dir: str | Path, matrix: str = "small_matrix.csv", click_watch_ratio: float = 2.0,
                 untimed: str = "keep") -> Dataset:
    """Load KuaiRec from the folder holding its CSV files (or its `data/` subfolder).

    Items are the videos of `item_categories.csv` (all their `feat` ids count as categories, the
    first listed is primary, an empty list gets "unknown"); users those of `user_features.csv`.
    label = 1 when watch_ratio >= click_watch_ratio (KuaiRec has no clicks; DORL's threshold is
    2.0). The small matrix's stage-2 interactions (the ones that make it fully observed) have no
    time: `untimed="keep"` keeps them with timestamp -1 (so they sort first within a user, flagged
    in `extra["timed"]`), `untimed="drop"` leaves them out. `extra["watch_ratio"]` keeps the raw
    signal, aligned with the interactions.
    """
    if untimed not in ("keep", "drop"):
        raise ValueError(f"untimed must be 'keep' or 'drop', got {untimed!r}")
    root = Path(data_dir)
    paths = {name: find_file(root, name) for name in (ITEM_FILE, CAPTION_FILE, USER_FILE)}
    for name, path in paths.items():
        if path is None:
            raise DataError(f"missing {root / name}: KuaiRec needs {ITEM_FILE}, {CAPTION_FILE}, {USER_FILE} and "
                            f"an interaction matrix ({' or '.join(MATRICES)}); download KuaiRec from {KUAIREC_URL}")
    matrix_path = Path(matrix) if Path(matrix).is_absolute() else find_file(root, matrix)
    if matrix_path is None or not matrix_path.is_file():
        raise DataError(
            f"missing interaction matrix {root / matrix}: KuaiRec's logs are {' or '.join(MATRICES)}; the side "
            f"files {ITEM_FILE}, {CAPTION_FILE} and {USER_FILE} alone are not enough to train a user model; "
            f"download the full KuaiRec from {KUAIREC_URL}")

    item_raw, item_tags = _read_item_categories(paths[ITEM_FILE])
    captions = _read_captions(paths[CAPTION_FILE])
    category_names, primary, cat_matrix = category_table(item_tags, _category_names(item_raw, item_tags, captions))
    titles = [_title(captions.get(v)) for v in item_raw.tolist()]
    user_raw, user_features = kuaishou_user_features(paths[USER_FILE])

    cols = read_csv_columns(matrix_path, {"user_id": pa.int64(), "video_id": pa.int64(),
                                          "timestamp": pa.float64(), "watch_ratio": pa.float64()},
                            nullable=("timestamp",))
    user = dense_ids(user_raw, cols["user_id"], matrix_path, "user_id", paths[USER_FILE])
    item = dense_ids(item_raw, cols["video_id"], matrix_path, "video_id", paths[ITEM_FILE])
    watch_ratio = cols["watch_ratio"].astype(np.float32)
    timed = np.isfinite(cols["timestamp"])
    ts = np.where(timed, np.nan_to_num(cols["timestamp"]), -1).astype(np.int64)
    keep = timed if untimed == "drop" else np.ones(len(ts), dtype=bool)
    order = np.flatnonzero(keep)[np.lexsort((ts[keep], user[keep]))]
    label = (watch_ratio >= click_watch_ratio).astype(np.float32)
    return Dataset(
        name="kuairec",
        category_names=category_names,
        item_category=primary,
        item_category_matrix=cat_matrix,
        item_titles=titles,
        item_raw_ids=item_raw,
        user_raw_ids=user_raw,
        interactions=Interactions(user=user[order], item=item[order], label=label[order], timestamp=ts[order]),
        feedback="click",
        user_features=user_features,
        extra={"watch_ratio": watch_ratio[order], "timed": timed[order], "click_watch_ratio": click_watch_ratio,
               "matrix": str(matrix_path)},
    ).validate()
