"""Typing names from the standard library where it has them, else from typing_extensions.

On Python 3.11 and later nothing here imports typing_extensions, which would otherwise
add some 600 objects to every full collection of the garbage collector, for names that
matter to type checkers only.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from typing import ParamSpec, Self, final
else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10
    from typing_extensions import ParamSpec, Self, final

__all__ = ["ParamSpec", "Self", "final"]
