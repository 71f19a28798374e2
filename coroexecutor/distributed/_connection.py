"""The client a DaskExecutor sends through, and what it started to get one.

The client is the one passed in, or one the executor makes: to an address, or to a
LocalCluster it starts. What the executor started it also closes; a client passed in
stays open.
"""

from __future__ import annotations

from typing import Any, Optional

import distributed

__all__ = ["Connection"]


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
