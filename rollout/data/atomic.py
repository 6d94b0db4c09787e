"""RecBole's atomic files (`NAME.inter`, `NAME.item`, `NAME.user`) into a `Dataset`: the field's one
common format for recommendation data (RecBole and its dataset collection publish dozens of public
data sets in it). The project reads the files itself; it never imports RecBole. Ids are the
`user_id` / `item_id` columns, or else the first token columns (.inter: user, then item).

Each file is tab-separated with a header of `field:type` columns, type one of `token`,
`token_seq` (space-separated tokens), `float`, `float_seq`:

    user_id:token  item_id:token  rating:float  timestamp:float      (NAME.inter)
    item_id:token  movie_title:token_seq  release_year:token  class:token_seq   (NAME.item)
    user_id:token  age:token  gender:token  occupation:token  zip_code:token     (NAME.user)

What is read: from `.inter` the user, the item, the feedback (a float column: a rating, or a 0/1
label) and the timestamp when there is one (else the file order); from `.item` the categories (a
`token` or `token_seq` column; an item's first token is its primary category) and a title when
there is one; from `.user`, when present, every other column as a user feature. The fields are
found from the header (`category_field`, `feedback_field` override the guesses). Anything
malformed raises `DataError` naming the file, the line and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rollout.data.dataset import DataError, Dataset, Interactions

TYPES = ("token", "token_seq", "float", "float_seq")
CATEGORY_FIELDS = ("class", "genre", "genres", "category", "categories", "tag", "tags", "categories_seq")
FEEDBACK_FIELDS = ("rating", "label", "click", "score", "watch_ratio")
UNKNOWN = "unknown"  # the category of an item listed with none


@dataclass(frozen=True)
class AtomicOptions:
    """How to read an atomic data set; None = found from the headers."""

    name: str | None = None               # the files' stem (NAME.inter); None = the folder's name
    category_field: str | None = None     # the .item column of categories
    feedback_field: str | None = None     # the .inter column of feedback
    positive_threshold: float | None = None  # a feedback at or above it is positive (None: 4 of 5 stars, or > 0.5)
    category_order: tuple[str, ...] = ()  # a fixed category order (e.g. a data set's published one)


@dataclass
class AtomicFile:
    """One atomic file: its path, fields in header order with their types, and its rows."""

    path: Path
    fields: list[str]
    types: list[str]
    rows: list[list[str]]

    def column(self, field: str) -> list[str]:
        j = self.fields.index(field)
        return [row[j] for row in self.rows]

    def floats(self, field: str) -> np.ndarray:
        values = self.column(field)
        try:
            return np.asarray(values, dtype=np.float64)
        except ValueError:
            for lineno, value in enumerate(values, 2):
                try:
                    float(value)
                except ValueError:
                    raise DataError(f"{self.path}: line {lineno}: field {field} must be a number, "
                                    f"got {value[:60]!r}") from None
            raise


def read_atomic(path: Path) -> AtomicFile:
    """Parse one atomic file (DataError naming the file, line and field on anything malformed)."""
    if not path.is_file():
        raise DataError(f"missing {path}: an atomic data set needs NAME.inter and NAME.item (NAME.user optional)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: the file is empty (expected a header of field:type columns)")
    fields, types = [], []
    for column in lines[0].split("\t"):
        name, sep, kind = column.strip().rpartition(":")
        if not sep or not name or kind not in TYPES:
            raise DataError(f"{path}: line 1: header column {column!r} is not field:type with type one of "
                            f"{', '.join(TYPES)}")
        fields.append(name)
        types.append(kind)
    if len(set(fields)) != len(fields):
        raise DataError(f"{path}: line 1: a field appears twice in the header")
    rows = []
    for lineno, line in enumerate(lines[1:], 2):
        row = line.split("\t")
        if len(row) != len(fields):
            raise DataError(f"{path}: line {lineno}: expected {len(fields)} tab-separated fields "
                            f"({', '.join(fields)}), got {len(row)}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: the file has a header but no rows")
    return AtomicFile(path, fields, types, rows)


def _id_field(file: AtomicFile, entity: str, position: int = 0) -> str:
    """The `entity`_id column, else (RecBole's files name ids as their configs say) the token column
    at `position` among the token columns: .inter holds user then item, .item and .user their id first."""
    wanted = f"{entity}_id"
    if wanted in file.fields:
        return wanted
    tokens = [f for f, t in zip(file.fields, file.types) if t == "token"]
    if len(tokens) <= position:
        raise DataError(f"{file.path}: no {wanted}:token column in the header ({', '.join(file.fields)}), and too "
                        f"few token columns to take the {entity} id from")
    return tokens[position]


def _pick(file: AtomicFile, given: str | None, preferred: tuple[str, ...], kinds: tuple[str, ...], what: str,
          exclude: tuple[str, ...] = ()) -> str | None:
    """The column `given`, else the first of `preferred` present, else the first of the `kinds`."""
    if given is not None:
        if given not in file.fields:
            raise DataError(f"{file.path}: no field {given!r} for the {what} (fields: {', '.join(file.fields)})")
        if file.types[file.fields.index(given)] not in kinds:
            raise DataError(f"{file.path}: field {given!r} is {file.types[file.fields.index(given)]}; the {what} "
                            f"must be {' or '.join(kinds)}")
        return given
    candidates = [f for f, t in zip(file.fields, file.types) if t in kinds and f not in exclude]
    for name in preferred:
        if name in candidates:
            return name
    return candidates[0] if candidates else None


def _items(file: AtomicFile, options: AtomicOptions):
    """Raw ids, titles, category names, primary category and the category matrix of `.item`."""
    id_field = _id_field(file, "item")
    title = next((f for f in file.fields if "title" in f or f in ("name", "caption")), None)
    category = _pick(file, options.category_field, CATEGORY_FIELDS, ("token_seq", "token"), "category field",
                     exclude=(id_field, title or ""))
    if category is None:
        raise DataError(f"{file.path}: no token or token_seq column to take categories from "
                        f"(fields: {', '.join(file.fields)}); name one with --atomic-category-field")
    raw = file.column(id_field)
    seen: set[str] = set()
    for line, value in enumerate(raw, 2):
        if value in seen:
            raise DataError(f"{file.path}: line {line}: {id_field} {value!r} appears twice")
        seen.add(value)
    tokens = [value.split() or [UNKNOWN] for value in file.column(category)]
    names = list(options.category_order) or list(dict.fromkeys(t for item in tokens for t in item))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({t for item in tokens for t in item} - set(index))
    if unknown:
        raise DataError(f"{file.path}: field {category}: categories {unknown[:3]} are not in the data set's "
                        f"category list")
    matrix = np.zeros((len(raw), len(names)), bool)
    for i, item in enumerate(tokens):
        matrix[i, [index[t] for t in item]] = True
    primary = np.asarray([min(index[t] for t in item) if options.category_order else index[item[0]]
                          for item in tokens], np.int32)
    titles = file.column(title) if title else [""] * len(raw)
    return raw, titles, names, primary, matrix


def _user_features(file: AtomicFile, user_raw: np.ndarray) -> dict[str, np.ndarray]:
    """Every non-id column of `.user`, aligned to the dense user ids (missing users: "" / NaN)."""
    id_field = _id_field(file, "user")
    where = {value: row for row, value in enumerate(file.column(id_field))}
    rows = np.asarray([where.get(str(u), -1) for u in user_raw])
    features = {}
    for field, kind in zip(file.fields, file.types):
        if field == id_field or kind.endswith("_seq"):
            continue
        values = file.floats(field) if kind == "float" else np.asarray(file.column(field), dtype=object)
        filler = np.nan if kind == "float" else ""
        features[field] = np.where(rows >= 0, values[np.maximum(rows, 0)], filler)
    return features


def read_files(folder: str | Path, name: str | None = None) -> tuple[AtomicFile, AtomicFile, AtomicFile | None]:
    """The parsed NAME.inter, NAME.item and (None when absent) NAME.user of `folder`; NAME
    defaults to the folder's name."""
    root = Path(folder)
    name = name or root.name
    user_path = root / f"{name}.user"
    return (read_atomic(root / f"{name}.inter"), read_atomic(root / f"{name}.item"),
            read_atomic(user_path) if user_path.is_file() else None)


def load_atomic(folder: str | Path, options: AtomicOptions = AtomicOptions()) -> Dataset:
    """The atomic data set in `folder` (see the module doc)."""
    return build_dataset(options.name or Path(folder).name, *read_files(folder, options.name), options)


def build_dataset(name: str, inter: AtomicFile, item_file: AtomicFile, user_file: AtomicFile | None,
                  options: AtomicOptions = AtomicOptions()) -> Dataset:
    """A `Dataset` from parsed atomic files (`read_files`)."""
    item_raw, titles, category_names, primary, matrix = _items(item_file, options)

    user_field, item_field = _id_field(inter, "user", 0), _id_field(inter, "item", 1)
    feedback = _pick(inter, options.feedback_field, FEEDBACK_FIELDS, ("float",), "feedback field",
                     exclude=("timestamp",))
    if feedback is None:
        raise DataError(f"{inter.path}: no float column to take feedback from (fields: {', '.join(inter.fields)}); "
                        "name one with --atomic-feedback-field")
    label = inter.floats(feedback)
    if not np.isfinite(label).all():
        line = int(np.flatnonzero(~np.isfinite(label))[0]) + 2
        raise DataError(f"{inter.path}: line {line}: field {feedback} must be finite")
    stamp = inter.floats("timestamp") if "timestamp" in inter.fields else np.arange(len(label), dtype=np.float64)

    # Dense ids in raw-id order (numeric when the ids are integers), as the other loaders make them.
    item_order = _id_order(item_raw)
    item_raw, titles = [item_raw[i] for i in item_order], [titles[i] for i in item_order]
    primary, matrix = primary[item_order], matrix[item_order]
    item_index = {value: i for i, value in enumerate(item_raw)}
    items = inter.column(item_field)
    dense_item = np.fromiter((item_index.get(v, -1) for v in items), np.int64, len(items))
    if (dense_item < 0).any():
        line = int(np.flatnonzero(dense_item < 0)[0]) + 2
        raise DataError(f"{inter.path}: line {line}: {item_field} {items[line - 2]!r} is not in {item_file.path.name}")
    users = inter.column(user_field)
    user_raw = sorted(set(users), key=_id_key(users))
    user_index = {value: i for i, value in enumerate(user_raw)}
    dense_user = np.fromiter((user_index[v] for v in users), np.int64, len(users))

    order = np.lexsort((stamp, dense_user))  # stable: ties keep file order
    clicks = bool(np.isin(label, (0.0, 1.0)).all())
    dataset = Dataset(
        name=name, category_names=category_names, item_category=primary, item_category_matrix=matrix,
        item_titles=titles, item_raw_ids=_raw_ids(item_raw), user_raw_ids=_raw_ids(user_raw),
        interactions=Interactions(user=dense_user[order].astype(np.int32), item=dense_item[order].astype(np.int32),
                                  label=label[order].astype(np.float32), timestamp=stamp[order].astype(np.int64)),
        feedback="click" if clicks else "rating",
        rating_scale=(0.0, 1.0) if clicks else (float(label.min()), float(label.max())),
        positive_threshold=options.positive_threshold)
    if user_file is not None:
        dataset.user_features = _user_features(user_file, dataset.user_raw_ids)
    return dataset.validate()


def _integers(values) -> bool:
    """Whether every raw id is an integer (most data sets): then ids sort and are kept as numbers."""
    return all(v.lstrip("-").isdigit() for v in values)


def _id_key(values):
    """Sort key of raw ids: numeric when every id is an integer, else the text."""
    return int if _integers(values) else str


def _id_order(values: list[str]) -> np.ndarray:
    key = _id_key(values)
    return np.asarray(sorted(range(len(values)), key=lambda i: key(values[i])), np.int64)


def _raw_ids(values: list[str]) -> np.ndarray:
    """Raw ids as integers when they all are, else as strings."""
    return np.asarray([int(v) for v in values], np.int64) if _integers(values) else np.asarray(values, dtype=str)
