"""Non-IID client splits: each label's examples shared among clients by Dirichlet(alpha) weights."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def dirichlet_split(labels: list[int] | np.ndarray, clients: int, alpha: float, seed: int,
                    min_size: int = 2, max_tries: int = 100) -> list[np.ndarray]:
    """Indices per client. For every label, proportions ~ Dir(alpha) over the clients decide how its
    examples are dealt out (the usual non-IID benchmark split); redrawn until every client holds at
    least `min_size` examples. Deterministic in `seed`."""
    labels = np.asarray(labels)
    if len(labels) < clients * min_size:
        raise DataError(f"{len(labels)} training examples cannot give {clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for lab in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == lab))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(idx)).astype(int)[:-1]
            for c, chunk in enumerate(np.split(idx, cuts)):
                parts[c].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise DataError(f"no Dirichlet(alpha={alpha}) split gave every one of {clients} clients "
                    f"{min_size} examples in {max_tries} draws; raise alpha or lower the client count")
