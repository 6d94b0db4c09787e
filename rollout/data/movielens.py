"""MovieLens-100K loader: GroupLens' `u.data`, `u.item` and `u.genre` into a `Dataset`.

MovieLens-100K is the project's real-data default because its titles and genres make real LLM
prompts. The files are read as published (tab-separated ratings, '|'-separated latin-1 catalog);
anything missing or malformed raises `DataError` naming the file and line, so a user with a
damaged download is told what to fix instead of getting a shape error three modules later.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rollout.data.atomic import AtomicOptions, build_dataset, read_files
from rollout.data.dataset import DataError, Dataset, Interactions

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_FILES = ("u.data", "u.item", "u.genre")
_RATING_FIELDS = ("user_id", "item_id", "rating", "timestamp")
_ITEM_FIXED_FIELDS = 5  # movie id | title | release date | video release date | IMDb URL


def _show(text: str, limit: int = 60) -> str:
    """A field or line as quoted in an error message: repr, cut at `limit` characters (garbled
    binary data must not turn the one-line message into a screenful)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _missing_hint(path: Path) -> str:
    return (f"missing {path}: MovieLens-100K needs {', '.join(ML100K_FILES[:-1])} and {ML100K_FILES[-1]}; "
            f"get it with `python -m rollout.data.download ml-100k --dest DIR` or from {ML100K_URL}")


def _read_lines(path: Path, encoding: str) -> list[str]:
    """The file's non-empty lines (the published files end with blank lines)."""
    if not path.is_file():
        raise DataError(_missing_hint(path))
    try:
        text = path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as {encoding} text: {exc}") from exc
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: the file is empty")
    return lines


def _parse_genres(path: Path) -> list[str]:
    """Genre names from `u.genre` ("name|index" lines), in index order."""
    names: list[str] = []
    for lineno, line in enumerate(_read_lines(path, "latin-1"), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise DataError(f"{path}: line {lineno}: expected 'genre name|index', got {_show(line)}")
        if int(parts[1]) != len(names):
            raise DataError(f"{path}: line {lineno}: expected genre index {len(names)}, got {parts[1]!r}")
        names.append(parts[0])
    return names


def _parse_items(path: Path, num_genres: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Raw item ids, titles and the [N, num_genres] genre flags from `u.item`."""
    expected = _ITEM_FIXED_FIELDS + num_genres
    ids: list[int] = []
    titles: list[str] = []
    flags: list[list[str]] = []
    for lineno, line in enumerate(_read_lines(path, "latin-1"), 1):
        parts = line.split("|")
        if len(parts) != expected:
            raise DataError(f"{path}: line {lineno}: expected {expected} '|'-separated fields (movie id, title, "
                            f"release date, video release date, URL, {num_genres} genre flags), got {len(parts)}")
        if not parts[0].isdigit():
            raise DataError(f"{path}: line {lineno}: expected an integer movie id, got {_show(parts[0])}")
        bad = [f for f in parts[_ITEM_FIXED_FIELDS:] if f not in ("0", "1")]
        if bad:
            raise DataError(f"{path}: line {lineno}: genre flags must be 0 or 1, got {_show(bad[0])}")
        ids.append(int(parts[0]))
        titles.append(parts[1])
        flags.append(parts[_ITEM_FIXED_FIELDS:])
    raw_ids = np.asarray(ids, dtype=np.int64)
    if len(np.unique(raw_ids)) != len(raw_ids):
        raise DataError(f"{path}: movie ids must be unique")
    return raw_ids, titles, np.asarray(flags) == "1"


def _parse_ratings(path: Path) -> np.ndarray:
    """[M, 4] int64 (user, item, rating, timestamp) from `u.data`.

    Converts every field in one numpy call (fast: 100,000 lines in ~0.1 s); only when that fails
    does it walk the lines to say which one is wrong.
    """
    lines = _read_lines(path, "ascii")
    with open(path, "rb") as fh:  # the published file ends with a line end; a cut-off copy mid-line does not
        fh.seek(-1, 2)
        if fh.read(1) not in (b"\n", b"\r"):
            raise DataError(f"{path}: line {len(lines)}: the file ends in the middle of a line "
                            f"({_show(lines[-1])}): it looks truncated; get it again with "
                            "`python -m rollout.data.download ml-100k`")
    rows = [line.split("\t") for line in lines]
    for lineno, row in enumerate(rows, 1):
        if len(row) != len(_RATING_FIELDS):
            last = " (the last line: the file looks truncated)" if lineno == len(rows) else ""
            raise DataError(f"{path}: line {lineno}: expected {len(_RATING_FIELDS)} tab-separated fields "
                            f"{', '.join(_RATING_FIELDS)}, got {len(row)}{last}")
    try:
        return np.asarray(rows).astype(np.int64)
    except ValueError:
        pass
    for lineno, row in enumerate(rows, 1):
        for name, value in zip(_RATING_FIELDS, row):
            try:
                int(value)
            except ValueError:
                raise DataError(f"{path}: line {lineno}: {name} must be an integer, got {_show(value)}") from None
    raise DataError(f"{path}: cannot convert the fields to integers")  # unreachable in practice


def _check_counts(info_path: Path, found: dict[str, tuple[int, Path]]) -> None:
    """Compare what was read with the counts `u.info` publishes ("943 users", ...), when it is
    there: a file cut short at a line boundary parses cleanly, and only the totals show it."""
    if not info_path.is_file():
        return
    try:
        lines = info_path.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise DataError(f"{info_path}: cannot be read: {exc}") from exc
    published = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1] in found:
            published[parts[1]] = int(parts[0])
    for kind, (count, path) in found.items():  # ratings first: the count a truncation shows most plainly
        if kind in published and count != published[kind]:
            raise DataError(f"{path}: {count:,} {kind} read, but {info_path.name} says {published[kind]:,}: the file is "
                            "truncated or damaged; get it again with `python -m rollout.data.download ml-100k`")


def load_movielens_100k(data_dir: str | Path) -> Dataset:
    """Load MovieLens-100K from the folder holding `u.data`, `u.item` and `u.genre`.

    Categories are the 19 genres of `u.genre` ("unknown" included); an item's primary category is
    its first flagged genre, and an item with no flag gets "unknown". Users are those who rated
    (all 943); item and user ids are made dense in raw-id order; labels are the 1-5 ratings.
    """
    root = Path(data_dir)
    genre_path, item_path, data_path = root / "u.genre", root / "u.item", root / "u.data"
    for path in (data_path, item_path, genre_path):
        if not path.is_file():
            raise DataError(_missing_hint(path))

    genres = _parse_genres(genre_path)
    item_raw, titles, flags = _parse_items(item_path, len(genres))
    ratings = _parse_ratings(data_path)

    order = np.argsort(item_raw, kind="stable")
    item_raw, flags = item_raw[order], flags[order]
    titles = [titles[i] for i in order]
    unknown = genres.index("unknown") if "unknown" in genres else None
    no_genre = ~flags.any(axis=1)
    if no_genre.any():
        if unknown is None:
            raise DataError(f"{item_path}: {int(no_genre.sum())} movies have no genre flag and "
                            f"{genre_path} has no 'unknown' genre to give them")
        flags[no_genre, unknown] = True
    primary = flags.argmax(axis=1).astype(np.int32)  # argmax of bool = first True

    user_col, item_col, rating_col, time_col = ratings.T
    bad = ~np.isin(item_col, item_raw)
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(f"{data_path}: line {line}: item_id {int(item_col[line - 1])} is not in {item_path}")
    out_of_scale = (rating_col < 1) | (rating_col > 5)
    if out_of_scale.any():
        line = int(np.flatnonzero(out_of_scale)[0]) + 1
        raise DataError(f"{data_path}: line {line}: rating must be in 1..5, got {int(rating_col[line - 1])}")
    user_raw, user_dense = np.unique(user_col, return_inverse=True)
    _check_counts(root / "u.info", {"ratings": (len(ratings), data_path), "items": (len(item_raw), item_path),
                                    "users": (len(user_raw), data_path)})
    item_dense = np.searchsorted(item_raw, item_col)

    order = np.lexsort((time_col, user_dense))  # stable: ties keep file order
    interactions = Interactions(
        user=user_dense[order].astype(np.int32),
        item=item_dense[order].astype(np.int32),
        label=rating_col[order].astype(np.float32),
        timestamp=time_col[order].astype(np.int64),
    )
    return Dataset(
        name="ml-100k",
        category_names=genres,
        item_category=primary,
        item_category_matrix=flags,
        item_titles=titles,
        item_raw_ids=item_raw,
        user_raw_ids=user_raw,
        interactions=interactions,
        feedback="rating",
        rating_scale=(1.0, 5.0),
        user_features=_parse_users(root / "u.user", user_raw),
    ).validate()


# The 19 genres in GroupLens' u.genre order (RecBole's copy lists an item's genres as tokens, without
# the index file): the category order, so that both copies make the same world.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
USER_FIELDS = ("age", "gender", "occupation", "zip_code")


def _parse_users(path: Path, user_raw: np.ndarray) -> dict[str, np.ndarray]:
    """Age, gender, occupation and zip code per user from `u.user` ("id|age|gender|occupation|zip"),
    in dense user order; {} when the file is not there (user features are never required)."""
    if not path.is_file():
        return {}
    rows = {}
    for lineno, line in enumerate(_read_lines(path, "latin-1"), 1):
        parts = line.split("|")
        if len(parts) != 1 + len(USER_FIELDS) or not parts[0].isdigit() or not parts[1].isdigit():
            raise DataError(f"{path}: line {lineno}: expected 'user id|age|gender|occupation|zip code', "
                            f"got {_show(line)}")
        rows[int(parts[0])] = parts[1:]
    missing = [int(u) for u in user_raw if int(u) not in rows]
    if missing:
        raise DataError(f"{path}: user {missing[0]} rated movies but has no line here")
    table = [rows[int(u)] for u in user_raw]
    return {"age": np.asarray([float(r[0]) for r in table], np.float32),
            **{name: np.asarray([r[j] for r in table], dtype=object) for j, name in enumerate(USER_FIELDS[1:], 1)}}


def load_movielens_100k_atomic(folder: str | Path) -> Dataset:
    """MovieLens-100K from RecBole's atomic files (`ml-100k.inter`, `.item`, `.user`: the copy the
    recbole wheel ships): the same interactions, genres, primary genres and ids as GroupLens' files
    (`load_movielens_100k`); titles get their release year back, "Toy Story (1995)", as GroupLens
    writes them."""
    inter, items, users = read_files(folder, "ml-100k")
    data = build_dataset("ml-100k", inter, items, users,
                         AtomicOptions(name="ml-100k", category_field="class", category_order=ML100K_GENRES))
    if "release_year" in items.fields:
        year = dict(zip(items.column("item_id"), items.column("release_year")))
        data.item_titles = [f"{title} ({year[str(raw)]})" if year.get(str(raw)) else title
                            for title, raw in zip(data.item_titles, data.item_raw_ids)]
    if "age" in data.user_features:
        data.user_features["age"] = np.asarray([float(a) for a in data.user_features["age"]], np.float32)
    return data.validate()
