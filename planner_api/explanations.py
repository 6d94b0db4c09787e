"""What an explanation names, checked against what it is about: the rule every scorer of
explanations shares (the heuristic judge, and `learner.explanations` beside the LLM judge).

An explanation is *grounded* in the slate it explains and the user's history: the categories of
their items and their titles. It is *faithful* when it names at least one grounded thing and
nothing that is not: no category outside them, no other catalog title, and no year in
parentheses that is not a grounded title's (how a title the model made up usually shows). Names
are matched case-insensitively as whole words; a title is matched without its trailing "(year)"
and with MovieLens' trailing article moved to the front ("Terminator, The" is "the terminator"),
and catalog titles shorter than MIN_TITLE_CHARS are not searched for (short titles such as "Ran"
or "It" are ordinary words).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MIN_TITLE_CHARS = 8
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ANY_YEAR = re.compile(r"\((\d{4})\)")
_ARTICLE = re.compile(r"^(.*), (the|a|an)$")


def _key(text: str) -> str:
    """A title as it is matched: lower case, no trailing (year), a trailing article in front."""
    key = " ".join(_YEAR.sub("", text or "").lower().split())
    moved = _ARTICLE.match(key)
    return f"{moved.group(2)} {moved.group(1)}" if moved else key


def _years(titles: Iterable[str]) -> set[str]:
    return {year for t in titles for year in _ANY_YEAR.findall(t or "")}


def _pattern(name: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)")


@dataclass
class Faithfulness:
    """What one explanation names: grounded mentions, ungrounded ones, and the verdict."""

    grounded: list[str] = field(default_factory=list)    # names of the slate's or the history's items
    ungrounded: list[str] = field(default_factory=list)  # names of anything else
    names_slate: bool = False                            # among the grounded: something of the slate
    names_history: bool = False                          # ... something of the history

    @property
    def faithful(self) -> bool:
        return bool(self.grounded) and not self.ungrounded


def faithfulness(text: str, slate_categories: Iterable[int], history_categories: Iterable[int],
                 category_names: Sequence[str], slate_titles: Iterable[str] = (), history_titles: Iterable[str] = (),
                 catalog_titles: Iterable[str] = ()) -> Faithfulness:
    """Check `text` against the slate's and the history's categories (ids into `category_names`)
    and titles; `catalog_titles` are the other titles an explanation might wrongly name."""
    slate_titles, history_titles = list(slate_titles), list(history_titles)
    low = " " + " ".join((text or "").lower().split()) + " "
    slate_c, history_c = set(slate_categories), set(history_categories)
    out = Faithfulness()
    for c, name in enumerate(category_names):
        key = _key(name)
        if len(key) < 3 or not _pattern(key).search(low):
            continue
        if c in slate_c or c in history_c:
            out.grounded.append(name)
            out.names_slate |= c in slate_c
            out.names_history |= c in history_c
        else:
            out.ungrounded.append(name)
    slate_t = {_key(t) for t in slate_titles if _key(t)}
    history_t = {_key(t) for t in history_titles if _key(t)}
    for title in slate_t | history_t:
        if _pattern(title).search(low):
            out.grounded.append(title)
            out.names_slate |= title in slate_t
            out.names_history |= title in history_t
    for title in {_key(t) for t in catalog_titles} - slate_t - history_t:
        if len(title) >= MIN_TITLE_CHARS and _pattern(title).search(low):
            out.ungrounded.append(title)
    grounded_years = _years(slate_titles) | _years(history_titles)
    out.ungrounded += [f"({year})" for year in dict.fromkeys(_ANY_YEAR.findall(low)) if year not in grounded_years]
    return out


def rule_score(check: Faithfulness, words: int) -> float:
    """The heuristic judge's 1-5 rating of an explanation (a rule, labelled "heuristic", never an
    LLM's): 1 names nothing grounded; 2 names something ungrounded too; 3 names only the slate or
    only the history; 4 names both; 5 names both in at most 40 words."""
    if not check.grounded:
        return 1.0
    if check.ungrounded:
        return 2.0
    if not (check.names_slate and check.names_history):
        return 3.0
    return 5.0 if words <= 40 else 4.0
