"""The profanity filter (RecognitionConfig.profanity_filter): masks whole words from a list
that ships as data (data/profanity.txt) the way Google does, first letter then one "*" per
other letter ("f***"). Off unless a request asks for it."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


@lru_cache(maxsize=1)
def words() -> frozenset[str]:
    text = resources.files("streamstt.server").joinpath("data/profanity.txt").read_text()
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line for line in lines if line and not line.startswith("#"))


def mask(text: str) -> str:
    """`text` with every listed word masked; everything else (case, punctuation) kept."""
    return _WORD.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    word = match.group()
    base, apostrophe, rest = word.partition("'")  # "shit's": the word is "shit"
    if base.lower() not in words():
        return word
    return base[0] + "*" * (len(base) - 1) + apostrophe + rest
