"""The client a DaskExecutor sends through, and what it started to get one.

The client is the one passed in, or one the executor makes: to an address, or to a
LocalCluster it starts. What the executor started it also closes; a client passed in
stays open.

A client passed in may be closed by its owner while the executor runs, the cluster
alive: the executor's worker plugin, and its loop in every worker process, would then
stay for good, beside any later executor's (brk31 F6). ``reaching_scheduler`` gives the
closing a client of its own for the scheduler then, to remove them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Optional

import distributed

from ._wire import check_client, check_count

__all__ = ["RECONNECT_TIMEOUT", "Connection", "check_connection"]

_LOGGER = logging.getLogger("coroexecutor.distributed")

# Seconds a closing may wait to reach the scheduler of a client closed under it: dask
# tries to connect until then, so a scheduler gone as well costs the whole of it.
RECONNECT_TIMEOUT = 5.0


def check_connection(
    address: Optional[str], client: Optional[distributed.Client], n_workers: Optional[int]
) -> None:
    """Refuse, at the constructor, a way to connect that cannot work as asked."""
    if address is not None and client is not None:
        raise ValueError("pass an address or a client, not both")
    if n_workers is not None:
        if address is not None or client is not None:  # (it was ignored)
            raise ValueError(
                "n_workers applies only to the LocalCluster the executor starts without"
                f" an address or a client (got n_workers={n_workers!r})"
            )
        check_count("n_workers", n_workers)  # 0 would start a cluster that never runs a job
    if client is not None:
        check_client(client)


class Connection:
    """The client, and the client and cluster the executor started (closed by ``close``)."""

    def __init__(
        self, address: Optional[str], client: Optional[distributed.Client], n_workers: Optional[int]
    ) -> None:
        self.owns_client = client is None
        self.cluster: Any = None
        if client is None:
            if address is None:
                self.cluster = distributed.LocalCluster(
                    n_workers=n_workers, threads_per_worker=1, processes=True,
                    dashboard_address=":0",  # a free port: never a clash with another cluster
                )
                address = self.cluster
            client = distributed.Client(address)
        self.client: distributed.Client = client
        self.address: str = client.scheduler.address  # (the client forgets it once closed)

    @contextlib.contextmanager
    def reaching_scheduler(self) -> Iterator[Optional[distributed.Client]]:
        """A client for the scheduler, for the block: this one, or if it has been closed
        (its owner's doing), a new one to the same address, closed after the block; None
        when the scheduler cannot be reached (its cluster closed too)."""
        client = self.client
        if client.status not in ("closing", "closed"):
            yield client
            return
        # The client's cluster object (a LocalCluster), closed too: so is its scheduler.
        cluster_status = getattr(getattr(client, "cluster", None), "status", None)
        if getattr(cluster_status, "name", None) in ("closing", "closed"):
            yield None
            return
        try:
            substitute = distributed.Client(
                self.address, security=client.security, set_as_default=False,
                timeout=RECONNECT_TIMEOUT,
            )
        except Exception:  # OSError: the scheduler is gone too, and its plugins with it
            _LOGGER.debug("could not reach the scheduler of a closed client", exc_info=True)
            yield None
            return
        try:
            yield substitute
        finally:
            substitute.close()

    def close(self) -> None:
        """Close the client and the cluster this executor started, if it did."""
        if self.owns_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
