"""KuaiRand-Pure loader: Kuaishou's published CSV files into a `Dataset`.

KuaiRand is the data set LERL reports on. Its interaction logs are large (users download them
from https://kuairand.com); the side files (video and user features) are small. The CSV helpers
here are shared with the KuaiRec loader: both data sets come from Kuaishou in the same CSV
conventions (a header row, integer ids, -124 for "unknown").
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rollout.data.dataset import DataError, Dataset, Interactions

KUAIRAND_URL = "https://kuairand.com"
VIDEO_FILE = "video_features_basic_pure.csv"
USER_FILE = "user_features_pure.csv"
STANDARD_LOGS = ("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv")
RANDOM_LOGS = ("log_random_4_22_to_5_08_pure.csv",)
UNKNOWN = "unknown"


def find_file(data_dir: Path, name: str) -> Path | None:
    """`data_dir/name`, or `data_dir/data/name` (the layout of the published archives), if either exists."""
    for candidate in (data_dir / name, data_dir / "data" / name):
        if candidate.is_file():
            return candidate
    return None


def read_csv_columns(path: Path, types: Mapping[str, pa.DataType],
                     nullable: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Read the named columns of a headed CSV file with pyarrow (fast enough for the 10M-row logs).

    Checks the header first so that a missing column is reported by name, turns pyarrow's parse
    errors into `DataError` naming the file, and refuses empty cells except in `nullable` columns
    (which come back as float with NaN, or as "" for strings).
    """
    if not path.is_file():
        raise DataError(f"missing {path}")
    try:
        with path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the header row: {exc}") from exc
    missing = [c for c in types if c not in header]
    if missing:
        raise DataError(f"{path}: expected columns {', '.join(types)}; missing {', '.join(missing)} "
                        f"(header: {', '.join(header) or 'empty'})")
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=list(types), column_types=dict(types)))
    except (pa.ArrowInvalid, pa.ArrowKeyError) as exc:
        raise DataError(f"{path}: {exc}") from exc
    out: dict[str, np.ndarray] = {}
    for name, dtype in types.items():
        column = table.column(name)
        if column.null_count and name not in nullable and not pa.types.is_string(dtype):
            raise DataError(f"{path}: column {name} has {column.null_count} empty cells; expected a value in every row")
        out[name] = column.to_numpy(zero_copy_only=False) if not pa.types.is_string(dtype) else \
            np.asarray(column.fill_null("").to_pylist(), dtype=object)
    return out


KUAISHOU_USER_FEATURES: dict[str, pa.DataType] = {
    "user_active_degree": pa.string(), "is_lowactive_period": pa.int64(), "is_live_streamer": pa.int64(),
    "is_video_author": pa.int64(), "follow_user_num": pa.int64(), "fans_user_num": pa.int64(),
    "friend_user_num": pa.int64(), "register_days": pa.int64(), "follow_user_num_range": pa.string(),
    "fans_user_num_range": pa.string(), "friend_user_num_range": pa.string(), "register_days_range": pa.string(),
}
"""The named user columns KuaiRand and KuaiRec publish (same schema in both). Their 18 `onehot_feat*`
columns are anonymised codes with no meaning a persona or a fairness group could name: left out."""


def kuaishou_user_features(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(sorted raw user ids, typed feature columns aligned to them) of a Kuaishou user-features file.

    Columns of `KUAISHOU_USER_FEATURES` absent from the header are skipped (older releases lack some);
    a present one with a bad value is a DataError naming the file (via `read_csv_columns`)."""
    with path.open(encoding="utf-8", newline="") as f:
        header = set(next(csv.reader(f), []))
    types = {"user_id": pa.int64(), **{k: t for k, t in KUAISHOU_USER_FEATURES.items() if k in header}}
    table = read_csv_columns(path, types)
    user_raw = unique_ids(path, "user_id", table["user_id"])
    order = np.argsort(table["user_id"], kind="stable")  # file order -> the sorted ids' order
    features = {}
    for name, dtype in types.items():
        if name != "user_id":
            column = table[name][order]
            features[name] = column.astype(np.float32) if pa.types.is_integer(dtype) else column
    return user_raw, features


def unique_ids(path: Path, column: str, ids: np.ndarray) -> np.ndarray:
    """The sorted raw ids of a features file, refusing duplicates (ids must name one row each)."""
    raw = np.unique(ids)
    if len(raw) != len(ids):
        raise DataError(f"{path}: {column} must be unique, found {len(ids) - len(raw)} repeated ids")
    if len(raw) == 0:
        raise DataError(f"{path}: no rows")
    return raw


def dense_ids(raw: np.ndarray, values: np.ndarray, path: Path, column: str, known_from: Path) -> np.ndarray:
    """Map raw ids to dense positions in the sorted `raw`; an id not in `raw` is a DataError."""
    pos = np.searchsorted(raw, values)
    pos_clipped = np.minimum(pos, len(raw) - 1)
    bad = raw[pos_clipped] != values
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {row + 2}: {column} {values[row]} is not in {known_from} "
                        f"({int(bad.sum())} rows have unknown ids)")
    return pos.astype(np.int32)


def category_table(item_tags: list[list[int]], names: Mapping[int, str] | None = None,
                   default_name: str = "category {}") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Category names, primary category and [N, C] membership from per-item category id lists.

    Categories are the distinct non-negative ids in numeric order, then "unknown" when some item
    has no (or only negative, i.e. unknown) ids; an item's primary category is its first listed id.
    """
    known = sorted({t for tags in item_tags for t in tags if t >= 0})
    col = {t: i for i, t in enumerate(known)}
    category_names = [(names or {}).get(t) or default_name.format(t) for t in known]
    needs_unknown = any(not any(t >= 0 for t in tags) for tags in item_tags)
    if needs_unknown:
        category_names.append(UNKNOWN)
    matrix = np.zeros((len(item_tags), len(category_names)), dtype=bool)
    primary = np.zeros(len(item_tags), dtype=np.int32)
    for i, tags in enumerate(item_tags):
        cols = [col[t] for t in tags if t >= 0]
        if not cols:
            cols = [len(category_names) - 1]
        matrix[i, cols] = True
        primary[i] = cols[0]
    return category_names, primary, matrix


def _parse_tag(path: Path, row: int, tag: str) -> list[int]:
    """'' -> [], '39' -> [39], '20,43' -> [20, 43]."""
    try:
        return [int(t) for t in tag.split(",") if t.strip()]
    except ValueError:
        raise DataError(f"{path}: line {row + 2}: tag must be a comma-separated list of integer "
                        f"category ids, got {tag!r}") from None


def load_kuairand_pure(data_dir: str | Path, log_files: Sequence[str] | None = None) -> Dataset:
    """Load KuaiRand-Pure from the folder holding its CSV files (or its `data/` subfolder).

    Items are the videos of `video_features_basic_pure.csv`, users those of
    `user_features_pure.csv`. Categories are the video tags ("tag <id>"; KuaiRand publishes no
    names), all of a multi-tag video's tags counting and the first being its primary one. Logs:
    `log_files` (names or paths), by default every standard log present; the random-exposure log
    is left out by default because LERL trains on the standard logs. label = is_click,
    timestamp = time_ms // 1000.
    """
    root = Path(data_dir)
    video_path, user_path = find_file(root, VIDEO_FILE), find_file(root, USER_FILE)
    for name, path in ((VIDEO_FILE, video_path), (USER_FILE, user_path)):
        if path is None:
            raise DataError(f"missing {root / name}: KuaiRand-Pure needs {VIDEO_FILE}, {USER_FILE} and its "
                            f"log files; download KuaiRand-Pure from {KUAIRAND_URL}")
    if log_files is None:
        logs = [p for p in (find_file(root, n) for n in STANDARD_LOGS) if p is not None]
    else:
        logs = []
        for name in log_files:
            path = Path(name) if Path(name).is_absolute() else find_file(root, str(name))
            if path is None or not path.is_file():
                raise DataError(f"missing log file {root / name} (asked for in log_files)")
            logs.append(path)
    if not logs:
        raise DataError(
            f"no KuaiRand-Pure interaction log in {root}: expected {' and/or '.join(STANDARD_LOGS)} "
            f"(or pass log_files=, e.g. {RANDOM_LOGS[0]}). The side files {VIDEO_FILE} and {USER_FILE} "
            f"alone are not enough to train a user model; download the full KuaiRand-Pure from {KUAIRAND_URL}")

    videos = read_csv_columns(video_path, {"video_id": pa.int64(), "tag": pa.string()})
    item_raw = unique_ids(video_path, "video_id", videos["video_id"])
    tags_in_file_order = [_parse_tag(video_path, i, t) for i, t in enumerate(videos["tag"].tolist())]
    item_tags = [tags_in_file_order[j] for j in np.argsort(videos["video_id"], kind="stable")]
    category_names, primary, matrix = category_table(item_tags, default_name="tag {}")
    user_raw, user_features = kuaishou_user_features(user_path)

    parts = []
    for log in logs:
        cols = read_csv_columns(log, {"user_id": pa.int64(), "video_id": pa.int64(),
                                      "time_ms": pa.int64(), "is_click": pa.int8()})
        parts.append((dense_ids(user_raw, cols["user_id"], log, "user_id", user_path),
                      dense_ids(item_raw, cols["video_id"], log, "video_id", video_path),
                      cols["is_click"].astype(np.float32), cols["time_ms"] // 1000))
    user, item, label, ts = (np.concatenate(c) for c in zip(*parts))
    if len(label) and not np.isin(label, (0.0, 1.0)).all():
        raise DataError(f"is_click must be 0 or 1 in {', '.join(map(str, logs))}")
    order = np.lexsort((ts, user))
    return Dataset(
        name="kuairand-pure",
        category_names=category_names,
        item_category=primary,
        item_category_matrix=matrix,
        item_titles=[""] * len(item_raw),  # KuaiRand publishes no video text
        item_raw_ids=item_raw,
        user_raw_ids=user_raw,
        interactions=Interactions(user=user[order], item=item[order], label=label[order],
                                  timestamp=ts[order].astype(np.int64)),
        feedback="click",
        user_features=user_features,
        extra={"log_files": [str(p) for p in logs]},
    ).validate()
