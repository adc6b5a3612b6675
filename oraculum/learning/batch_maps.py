"""Maps of the batch: 2-D projections of the batch's spectra for the labelling dashboard.

The oracle labels faster and more consistently when similar spectra sit together: each iteration
projects the batch's embeddings (the network's penultimate layer, or the flux itself before there
is a network) to the plane by PCA, t-SNE and, when installed, UMAP, and stores the coordinates
next to the batch (``map.json``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["batch_map"]



def batch_map(embedding: np.ndarray, seed: int) -> tuple[dict[str, list[list[float]]], dict[str, Any], list[str]]:
    """2-D coordinates of each row of ``embedding`` by PCA, t-SNE and (if installed) UMAP.

    t-SNE's perplexity is adapted to small batches (``min(30, (n - 1) / 3)``, at least 1) and
    UMAP's ``n_neighbors`` likewise (``min(15, n - 1)``). Returns (coordinates per method,
    parameters, notes).
    """
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # A batch is tiny (hundreds of points): one thread is as fast and never fights the
    # network's thread pools, or other pods on the node, for cores.
    with threadpool_limits(limits=1):
        return _batch_map(np.asarray(embedding, dtype=np.float64), seed)


def _batch_map(x: np.ndarray, seed: int) -> tuple[dict[str, list[list[float]]], dict[str, Any], list[str]]:
    n = x.shape[0]
    coords: dict[str, list[list[float]]] = {}
    params: dict[str, Any] = {}
    notes: list[str] = []
    if n == 0:
        return coords, params, ["empty batch: no map"]
    if n < 3 or float(np.ptp(x, axis=0).max(initial=0.0)) == 0.0:
        coords["pca"] = [[0.0, 0.0] for _ in range(n)]
        notes.append("fewer than 3 distinct points: PCA map is degenerate")
        return coords, params, notes
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    coords["pca"] = pca.fit_transform(x).tolist()
    params["pca"] = {"explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_]}
    if n >= 5:
        from sklearn.manifold import TSNE

        perplexity = float(max(1.0, min(30.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500)
        coords["tsne"] = tsne.fit_transform(x).tolist()
        params["tsne"] = {"perplexity": perplexity, "max_iter": 500, "random_state": seed}
    else:
        notes.append("fewer than 5 spectra: no t-SNE map")
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        notes.append("UMAP not computed: the optional package umap-learn is not installed")
    else:
        if n >= 5:
            neighbours = int(min(15, n - 1))
            reducer = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed)
            coords["umap"] = np.asarray(reducer.fit_transform(x)).tolist()
            params["umap"] = {"n_neighbors": neighbours, "random_state": seed}
    return coords, params, notes
