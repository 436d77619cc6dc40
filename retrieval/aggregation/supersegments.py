"""Segments on a patch grid, their neighbourhood graph, and the supersegments SegVLAD encodes
(Garg et al., "Revisit Anything", ECCV 2024; AnyLoc/Revisit-Anything `func_vpr.py`).

- A segment covers every patch that any of its pixels falls in (`seg_vlad_gpu_single` marks a
  patch when one pixel of the mask maps to it). A segment that covers no patch (an empty
  mask) is skipped and counted.
- Neighbours: by default, as the reference (`nbrMasksAGGFastSingle`), the Delaunay
  triangulation of the segments' centroids (mean pixel position), each segment its own
  neighbour too. Where there is no triangulation (two segments, or centroids on one line),
  each segment is joined to the next along their line (the reference, below four segments,
  joins every segment to the first two instead). `graph="touching"` joins instead
  segments whose patches overlap or are 4-neighbours on the grid.
- A supersegment of order o is a segment with every segment within o hops of it in that
  graph (the reference takes the boolean o-th power of the adjacency with self loops); its
  patches are the union of theirs. SegVLAD's default order is 3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import Delaunay, QhullError

from retrieval.aggregation.dense import pixel_cells

GRAPHS = ("delaunay", "touching")
MASK_CHUNK = 16
"""Masks turned into patch cover at once: bounds the float copy of full-resolution masks."""


@dataclass(frozen=True)
class Supersegments:
    """Supersegments grown from the segments of one image that cover at least one patch."""

    segments: np.ndarray
    """(n,) int64: index in the given masks of each kept segment (= of each supersegment)."""
    members: torch.Tensor
    """(n, n) bool: row s marks the kept segments supersegment s is made of."""
    cover: torch.Tensor
    """(n, h*w) bool: the patches (row-major) supersegment s covers."""
    skipped: int
    """Segments left out because they cover no patch."""


def masks_from_labels(labels: np.ndarray) -> np.ndarray:
    """(n, H, W) bool masks of the n distinct non-negative labels of an H x W label map, in
    increasing label order (negative labels: no segment)."""
    values = np.unique(labels[labels >= 0])
    return labels[None] == values[:, None, None]


def patch_cover(masks: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """(n, h*w) bool: the patches of an h x w grid laid over (n, H, W) masks that each mask
    has at least one pixel in."""
    count, height, width = masks.shape
    rows = pixel_cells(height, grid_hw[0], masks.device)
    cols = pixel_cells(width, grid_hw[1], masks.device)
    cover = torch.zeros(count, *grid_hw, dtype=torch.bool, device=masks.device)
    for start in range(0, count, MASK_CHUNK):
        chunk = masks[start : start + MASK_CHUNK].float()
        per_row = torch.zeros(len(chunk), grid_hw[0], width, device=masks.device).index_add_(1, rows, chunk)
        per_cell = torch.zeros(len(chunk), *grid_hw, device=masks.device).index_add_(2, cols, per_row)
        cover[start : start + MASK_CHUNK] = per_cell > 0
    return cover.flatten(1)


def centroids(masks: torch.Tensor) -> np.ndarray:
    """(n, 2) float64 mean (x, y) pixel position of each of (n, H, W) non-empty masks."""
    weights = masks.flatten(1).double()
    ys, xs = torch.meshgrid(
        torch.arange(masks.shape[1], device=masks.device, dtype=torch.float64),
        torch.arange(masks.shape[2], device=masks.device, dtype=torch.float64),
        indexing="ij",
    )
    area = weights.sum(dim=1)
    return torch.stack([weights @ xs.flatten(), weights @ ys.flatten()], dim=1).div(area[:, None]).cpu().numpy()


def delaunay_graph(points: np.ndarray) -> np.ndarray:
    """(n, n) bool adjacency, with self loops, of the Delaunay triangulation of (n, 2) points.
    A point that coincides with another shares that one's neighbours; points that have no
    triangulation (two, or all on one line) are joined in a chain along their line."""
    count = len(points)
    adjacency = np.eye(count, dtype=bool)
    if count < 2:
        return adjacency
    if count >= 3:
        try:
            triangulation = Delaunay(points)
        except QhullError:
            triangulation = None
        if triangulation is not None:
            starts, neighbours = triangulation.vertex_neighbor_vertices
            for vertex in range(count):
                adjacency[vertex, neighbours[starts[vertex] : starts[vertex + 1]]] = True
            for point, _, vertex in triangulation.coplanar:
                adjacency[point] |= adjacency[vertex]
                adjacency[point, vertex] = True
            return adjacency | adjacency.T
    centred = points - points.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    order = np.argsort(centred @ direction, kind="stable")
    adjacency[order[:-1], order[1:]] = True
    return adjacency | adjacency.T


def touching_graph(cover: torch.Tensor, grid_hw: tuple[int, int]) -> np.ndarray:
    """(n, n) bool adjacency of segments whose (n, h*w) patch covers share a patch or touch
    (4-neighbourhood on the h x w grid); every segment touches itself."""
    grid = cover.float().view(-1, 1, *grid_hw)
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], device=cover.device).view(1, 1, 3, 3)
    grown = F.conv2d(grid, cross, padding=1).flatten(1) > 0
    return ((grown.float() @ cover.float().T) > 0).cpu().numpy()


def grow(adjacency: np.ndarray, order: int) -> np.ndarray:
    """(n, n) bool: row s marks every node within `order` hops of node s (s included)."""
    if order < 0:
        raise ValueError(f"the order of a supersegment is a number of hops, at least 0, not {order}")
    step = torch.from_numpy(adjacency | np.eye(len(adjacency), dtype=bool)).float()
    reach = torch.eye(len(adjacency))
    for _ in range(order):
        reach = ((reach @ step) > 0).float()
    return reach.bool().numpy()


def supersegments(masks: np.ndarray | torch.Tensor, grid_hw: tuple[int, int], order: int = 3, graph: str = "delaunay") -> Supersegments:
    """The supersegments of order `order` of (n, H, W) bool `masks` on an h x w patch grid
    laid over the same image (see the module's docstring for each step)."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown segment graph {graph!r}: use one of {', '.join(GRAPHS)}")
    masks = torch.as_tensor(masks, dtype=torch.bool)
    if masks.dim() != 3:
        raise ValueError(f"expected (n, H, W) masks, got shape {tuple(masks.shape)}")
    cover = patch_cover(masks, grid_hw)
    kept = cover.any(dim=1)
    cover = cover[kept]
    if graph == "delaunay":
        adjacency = delaunay_graph(centroids(masks[kept]))
    else:
        adjacency = touching_graph(cover, grid_hw)
    members = torch.from_numpy(grow(adjacency, order)).to(cover.device)
    return Supersegments(
        segments=torch.nonzero(kept).flatten().cpu().numpy(),
        members=members,
        cover=(members.float() @ cover.float()) > 0,
        skipped=int((~kept).sum()),
    )
