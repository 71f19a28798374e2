"""The scale-out door: the same jobs on many processes and machines, on dask.distributed.

Installed with ``pip install "coroexecutor[dask]"`` (Python 3.10 or newer); ``import
coroexecutor`` never imports dask, and importing this package without it raises
ImportError naming the extra (or, before 3.10, the Python version needed).
"""

from __future__ import annotations

import sys

try:
    import distributed as _distributed  # noqa: F401  (only the check that it is there)
except ImportError as _error:  # pragma: no cover - depends on what is installed
    if sys.version_info < (3, 10):  # where the extra installs nothing (its marker)
        raise ImportError(
            "coroexecutor.distributed needs Python 3.10 or newer, as the dask.distributed"
            f" versions it supports do (this is Python {sys.version_info[0]}."
            f"{sys.version_info[1]})"
        ) from _error
    raise ImportError(
        "coroexecutor.distributed needs the dask.distributed package:"
        ' pip install "coroexecutor[dask]"'
    ) from _error

from ._executor import DaskExecutor
from ._outcomes import UnsentOutcomeError

__all__ = ["DaskExecutor", "UnsentOutcomeError"]

for _cls in (DaskExecutor, UnsentOutcomeError):
    _cls.__module__ = __name__  # reprs, pickles and Sphinx say coroexecutor.distributed.X
del _cls
