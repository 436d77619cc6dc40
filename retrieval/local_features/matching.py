"""Tentative correspondences between two descriptor sets: mutual nearest neighbours that also
pass Lowe's ratio test (Lowe, IJCV 2004), the standard weight-free matcher for SIFT."""
from __future__ import annotations

import numpy as np
import torch


def mutual_ratio_matches(
    a: np.ndarray, b: np.ndarray, ratio: float, device: torch.device | None = None
) -> np.ndarray:
    """(M, 2) int64 pairs (i, j): b[j] is a[i]'s nearest neighbour (Euclidean), a[i] is b[j]'s,
    and a[i]'s nearest is closer than `ratio` x its second nearest (ratio >= 1 disables the
    test; with a single candidate in b there is no second nearest and the test passes)."""
    if len(a) == 0 or len(b) == 0:
        return np.empty((0, 2), dtype=np.int64)
    device = device or torch.device("cpu")
    distances = torch.cdist(torch.as_tensor(a, dtype=torch.float32, device=device)[None],
                            torch.as_tensor(b, dtype=torch.float32, device=device)[None])[0]
    nearest = torch.topk(distances, k=min(2, len(b)), dim=1, largest=False)
    forward = nearest.indices[:, 0]
    backward = distances.argmin(dim=0)
    rows = torch.arange(len(a), device=device)
    keep = backward[forward] == rows
    if len(b) > 1:
        keep &= nearest.values[:, 0] < ratio * nearest.values[:, 1]
    return torch.stack([rows[keep], forward[keep]], dim=1).cpu().numpy().astype(np.int64)
