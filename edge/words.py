"""Counts in messages: "1 image", "2 images", one helper for every message that counts something."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """'1 image', '0 images', '2 images'; `plural_noun` for a noun that does not just take an s ('classes')."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"
