"""The client a DaskExecutor sends through, and what it started to get one.

The client is the one passed in, or one the executor makes: to an address, or to a
LocalCluster it starts. What the executor started it also closes; a client passed in
stays open.
"""

from __future__ import annotations

from typing import Any, Optional

import distributed

from ._wire import check_client, check_count

__all__ = ["Connection", "check_connection"]


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

    def close(self) -> None:
        """Close the client and the cluster this executor started, if it did."""
        if self.owns_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
