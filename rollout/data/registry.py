"""`load_dataset(name, data_dir)`: the one entry point from a data set's name to a `Dataset`.

The CLI and the benchmarks name a data set and maybe a folder; this module turns that into the
right loader and, when no folder is given, looks in the places the download helper writes to,
so that `--dataset ml-100k` works after `python -m rollout.data.download ml-100k` with no flags.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

from rollout.data.atomic import AtomicOptions, load_atomic
from rollout.data.dataset import DataError, Dataset
from rollout.data.download import DATA_DIR_ENV, cache_root
from rollout.data.kuairand import KUAIRAND_URL, load_kuairand_pure
from rollout.data.kuairec import KUAIREC_URL, load_kuairec
from rollout.data.movielens import ML100K_URL, load_movielens_100k, load_movielens_100k_atomic
from rollout.data.synthetic import synthetic_dataset

DATASETS = ("synthetic", "ml-100k", "kuairand-pure", "kuairec", "atomic")
RECBOLE_ML100K = ("dataset_example", "ml-100k")  # where the recbole wheel keeps its MovieLens-100K

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "ml-100k": load_movielens_100k,
    "kuairand-pure": load_kuairand_pure,
    "kuairec": load_kuairec,
}
_HOW_TO_GET = {
    "ml-100k": (f"install the recbole wheel that carries a copy (`bash scripts/setup.sh` does), or run "
                f"`python -m rollout.data.download ml-100k` (or unzip {ML100K_URL} there)"),
    "kuairand-pure": f"download KuaiRand-Pure from {KUAIRAND_URL} and unpack its CSV files there",
    "kuairec": f"download KuaiRec from {KUAIREC_URL} and unpack its CSV files there",
}


def embedded_ml100k() -> Path | None:
    """MovieLens-100K inside the installed recbole wheel (RecBole atomic files; scripts/setup.sh
    installs the wheel without its dependencies), or None. The package is only located, never
    imported: RecBole's own dependencies are not installed."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*RECBOLE_ML100K)
    return folder if (folder / "ml-100k.inter").is_file() else None


def candidate_dirs(name: str) -> list[Path]:
    """Where a data set is looked for when no folder is given: $LLMREC_DATA_DIR/<name>, then the cache."""
    out = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        out.append(Path(env).expanduser() / name)
    out.append(cache_root() / name)
    return out


def resolve_data_dir(name: str, data_dir: str | Path | None) -> Path:
    """The folder to load `name` from.

    An explicit `data_dir` is used as given (or its `<name>/` subfolder, when it is the parent of
    several data sets); the loader then reports any missing file. Without one, the first existing
    candidate folder wins, and none existing is a DataError naming every place looked at.
    """
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        return folder / name if (folder / name).is_dir() else folder
    candidates = candidate_dirs(name)
    for folder in candidates:
        if folder.is_dir():
            return folder
    embedded = embedded_ml100k() if name == "ml-100k" else None
    if embedded is not None:
        return embedded  # no download needed: the copy inside the recbole wheel
    looked = ", ".join(str(p) for p in candidates)
    raise DataError(f"data set {name!r} not found; looked in {looked}. To get it, {_HOW_TO_GET[name]} "
                    f"into {candidates[0]}, or pass data_dir= (--data-dir) pointing at its folder, "
                    f"or set {DATA_DIR_ENV} to a folder holding {name}/")


def load_dataset(name: str, data_dir: str | Path | None = None, **options) -> Dataset:
    """Load a data set by name; `options` go to its loader (e.g. `matrix="big_matrix.csv"` for KuaiRec).

    "synthetic" is generated (no files; `data_dir` is not used); the others are read from
    `data_dir` or the default folders (see `resolve_data_dir`).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "synthetic":
        return synthetic_dataset(**options)
    if name == "atomic":
        if data_dir is None:
            raise DataError("--dataset atomic reads RecBole atomic files (NAME.inter, NAME.item, NAME.user): "
                            "pass --data-dir DIR (and --atomic-name NAME when the files are not named after DIR)")
        folder = Path(data_dir).expanduser()
        data = load_atomic(folder, options.get("atomic", AtomicOptions()))
    else:
        folder = resolve_data_dir(name, data_dir)
        if name == "ml-100k" and not (folder / "u.data").is_file() and (folder / "ml-100k.inter").is_file():
            data = load_movielens_100k_atomic(folder)  # RecBole's atomic copy (e.g. the embedded one)
        else:
            data = _LOADERS[name](folder, **options)
    embedded = name == "ml-100k" and folder == embedded_ml100k()
    data.source = f"{'embedded' if embedded else 'directory'}: {folder}"
    return data
