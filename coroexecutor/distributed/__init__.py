"""The scale-out door: the same jobs on many processes and machines, on dask.distributed.

Installed with ``pip install "coroexecutor[dask]"``; ``import coroexecutor`` never imports
dask, and importing this package without it raises ImportError naming the extra.
"""

from __future__ import annotations

try:
    import distributed as _distributed  # noqa: F401  (only the check that it is there)
except ImportError as _error:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "coroexecutor.distributed needs the dask.distributed package:"
        ' pip install "coroexecutor[dask]"'
    ) from _error

from ._executor import DaskExecutor
from ._wire import UnsentOutcomeError

__all__ = ["DaskExecutor", "UnsentOutcomeError"]

for _cls in (DaskExecutor, UnsentOutcomeError):
    _cls.__module__ = __name__  # reprs, pickles and Sphinx say coroexecutor.distributed.X
del _cls
