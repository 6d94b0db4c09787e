"""Bad data (issue 8, point 4): damaged copies of the real MovieLens-100K files are refused by the
loader with a DataError that names the file (and the line, where there is one) and stays one
short line, whatever bytes the damage left. Copies are made in tmp_path; the shared files are
never touched."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rollout.data.dataset import DataError
from rollout.data.movielens import load_movielens_100k
from rollout.data.registry import load_dataset

SHARED_ML100K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k"
FILES = ("u.data", "u.item", "u.genre", "u.info")
pytestmark = pytest.mark.skipif(not all((SHARED_ML100K / n).is_file() for n in FILES),
                                reason=f"the MovieLens-100K test files ({', '.join(FILES)}) are not at {SHARED_ML100K}")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    for name in FILES:
        shutil.copy(SHARED_ML100K / name, folder / name)
    return folder


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="latin-1").splitlines()


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def _cut_mid_line(folder: Path) -> None:
    data = (folder / "u.data").read_bytes()
    cut = data.index(b"\n", len(data) // 2) - 3  # three characters short of a line end
    (folder / "u.data").write_bytes(data[:cut])


def _cut_at_line_end(folder: Path) -> None:  # every line intact: only the published totals can tell
    data = (folder / "u.data").read_bytes()
    (folder / "u.data").write_bytes(data[: data.index(b"\n", len(data) // 2) + 1])


def _garble(folder: Path) -> None:
    data = bytearray((folder / "u.data").read_bytes())
    data[5000:5008] = b"\xff\xfe\x00\x01\x9c\x80\x81\x82"
    (folder / "u.data").write_bytes(bytes(data))


def _extra_column(folder: Path) -> None:
    lines = _lines(folder / "u.data")
    lines[99] += "\t5"
    _write_lines(folder / "u.data", lines)


def _non_numeric_id(folder: Path) -> None:
    lines = _lines(folder / "u.data")
    lines[41] = "user42" + lines[41][lines[41].index("\t"):]
    _write_lines(folder / "u.data", lines)


def _item_missing_genres(folder: Path) -> None:
    lines = _lines(folder / "u.item")
    lines[6] = "|".join(lines[6].split("|")[:10])
    _write_lines(folder / "u.item", lines)


def _item_bad_id(folder: Path) -> None:
    lines = _lines(folder / "u.item")
    lines[2] = "x3" + lines[2][lines[2].index("|"):]
    _write_lines(folder / "u.item", lines)


def _binary_genre(folder: Path) -> None:
    (folder / "u.genre").write_bytes(b"\xde\xad\xbe\xef\x00\x7f" * 200)


def _empty_data(folder: Path) -> None:
    (folder / "u.data").write_bytes(b"")


def _unknown_item(folder: Path) -> None:
    lines = _lines(folder / "u.data")
    lines[7] = "1\t99999\t4\t881250949"
    _write_lines(folder / "u.data", lines)


CASES = {
    "u.data truncated mid-line": (_cut_mid_line, "u.data", r"line \d+: the file ends in the middle of a line"),
    "u.data truncated at a line end": (_cut_at_line_end, "u.data", r"ratings read, but u\.info says 100,000"),
    "u.data garbled bytes": (_garble, "u.data", "cannot be read as ascii text"),
    "u.data wrong column count": (_extra_column, "u.data", "line 100: expected 4 tab-separated fields"),
    "u.data non-numeric id": (_non_numeric_id, "u.data", "line 42: user_id must be an integer, got 'user42'"),
    "u.data unknown item": (_unknown_item, "u.data", r"line 8: item_id 99999 is not in .*u\.item"),
    "u.data empty": (_empty_data, "u.data", "the file is empty"),
    "u.item wrong column count": (_item_missing_genres, "u.item", "line 7: expected 24 '|'-separated fields"),
    "u.item non-numeric id": (_item_bad_id, "u.item", "line 3: expected an integer movie id, got 'x3'"),
    "u.genre binary garbage": (_binary_genre, "u.genre", r"line 1: expected 'genre name\|index', got .*\(\d+ characters\)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_files_are_refused_naming_file_and_line(copy: Path, case: str) -> None:
    damage, name, message = CASES[case]
    damage(copy)
    with pytest.raises(DataError, match=message) as info:
        load_movielens_100k(copy)
    text = str(info.value)
    assert str(copy / name) in text
    assert "\n" not in text and len(text) < 400  # one line, however garbled the input


@pytest.mark.parametrize("name", ["u.data", "u.item", "u.genre"])
def test_a_missing_file_is_named_with_how_to_get_it(copy: Path, name: str) -> None:
    (copy / name).unlink()
    with pytest.raises(DataError, match=rf"missing {copy / name}: .*rollout\.data\.download ml-100k"):
        load_movielens_100k(copy)


def test_the_untouched_copy_loads_and_a_missing_folder_is_named(copy: Path, tmp_path: Path) -> None:
    assert len(load_movielens_100k(copy).interactions) == 100_000  # the damage, not the copy, fails above
    with pytest.raises(DataError, match=f"missing {tmp_path / 'nowhere' / 'u.data'}"):
        load_dataset("ml-100k", tmp_path / "nowhere")
