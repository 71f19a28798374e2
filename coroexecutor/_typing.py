"""Typing names from the standard library where it has them, else from typing_extensions;
and the type variables the map signatures of the three executors share.

On Python 3.11 and later nothing here imports typing_extensions, which would otherwise
add some 600 objects to every full collection of the garbage collector, for names that
matter to type checkers only.
"""

from __future__ import annotations

import sys
from typing import TypeVar

if sys.version_info >= (3, 11):
    from typing import Never, ParamSpec, Self, TypeGuard, final
else:  # pragma: no cover - exercised by the tox matrix on 3.9 and 3.10
    from typing_extensions import Never, ParamSpec, Self, TypeGuard, final

__all__ = ["A1", "A2", "A3", "Never", "ParamSpec", "Self", "TypeGuard", "final"]

# The items of a map's first, second and third input: each must suit the parameter of
# ``fn`` in that place, as typeshed's overloads of the builtin ``map`` check them.
A1 = TypeVar("A1")
A2 = TypeVar("A2")
A3 = TypeVar("A3")
