"""How an idle Line leaves its KeyedLine, even when its key cannot find it any more.

A line is filed under the key object of the job that made its key active. A key whose
hash or equality changed since (a mutable dataclass with ``unsafe_hash=True``, renamed
while its job ran) does not find its line, or finds another key's; one whose
``__hash__`` or ``__eq__`` raises finds nothing. The jobs holding the line give their
room back to it all the same (see KeyedLine.release); here it leaves the map of lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._keyed import KeyedLine
    from ._keyed_ticket import Line

__all__ = ["drop_line"]


def drop_line(owner: KeyedLine[Any], line: Line) -> None:
    """An idle ``line`` leaves ``owner``: by its key (one lookup and one delete, the
    normal path), else by identity. Never raises for the key: what its ``__hash__`` or
    ``__eq__`` raised goes to ``owner.key_errors``."""
    lines = owner._lines
    key = line.key
    try:
        if lines.get(key) is line:  # (not just found: another key may equal it now)
            del lines[key]
            return
    except Exception as exc:  # the key's __hash__ or __eq__ (the user's) raised
        owner.key_errors.append(exc)
    _drop_lost(owner, line)


def _drop_lost(owner: KeyedLine[Any], line: Line) -> None:
    """The rare path: ``line`` is not where its key leads. O(number of active keys)."""
    lines = owner._lines
    if not any(found is line for found in lines.values()):
        return  # gone already (drain(), a resync) or never filed (an enter() undone)
    try:
        # Every other key is hashed again: one that changed is filed under its new hash.
        kept = {key: found for key, found in lines.items() if found is not line}
    except Exception as exc:  # another key's __hash__ or __eq__ raised
        owner.key_errors.append(exc)
    else:
        if len(kept) == len(lines) - 1:
            owner._lines = kept
            return
        # Two other keys that changed are equal now: the copy would lose one's line.
    # Kept, idle, not counted as active; a job whose key finds it makes it active again.
    owner.stale += 1
