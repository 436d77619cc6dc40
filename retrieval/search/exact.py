"""Exact top-k images over a gallery read block by block, in memory bounded by a budget.

The gallery's rows are cut into blocks at image boundaries (an image's rows never straddle
two blocks, so a block knows each of its images' best row). For every block of queries, each
row block gives its images' top k, plus every image tied with the k-th (`TIE_MARGIN` more,
or, when a tie runs past those, the lowest ones of it), and these candidates are merged into
a running top k ordered by score then lower image. An image's exact score is the same
whichever block computes it, so the result is the one in-memory search, ties included, in
O(query block x (k + row block)) memory, not O(queries x images).

Row blocks go round-robin to the devices (every visible GPU; the CPU otherwise), whose
candidates are merged on the first one: the CPU run is the same code with one device.

Over unit vectors (`cosines`), a similarity outside [-1, 1] beyond rounding, or not a number,
can only come from corrupt rows: the search stops with `OutOfRangeScores`, naming the row,
rather than rank it (one reduction of each block's similarities, beside the one it makes anyway).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from retrieval.errors import UserError
from retrieval.features.mapped import MappedRows, widen_into
from retrieval.search.images import ImageHits, best_per_image, widest_image
from retrieval.sizes import format_size, parse_size, size_problem

TIE_MARGIN = 16
"""Candidates a block keeps beyond k, so that a tie at the k-th place is usually seen whole."""
QUERY_BLOCK, ROW_BLOCK = 4096, 16384
"""Block sizes without a budget, and the sizes a budget shrinks from (see bench/bench_scale.py)."""
MIN_QUERY_BLOCK, MIN_ROW_BLOCK = 64, 1024
"""Below these, per-block overheads dominate: a budget that cannot hold them is refused."""
SLACK = 16 << 20
"""What a search holds besides its blocks: BLAS packing buffers, the allocator's slack, the
shard pages being read (bench/bench_scale.py measured about 12MB at 4096 x 8192 blocks)."""
PADDING = torch.iinfo(torch.int64).max
"""The image id of an empty place (sorts after every image)."""
COSINE_SLACK = 1e-2
"""How far past [-1, 1] a cosine may stray by rounding (float16 storage moves a norm by up to
5e-4); a flipped bit of a stored vector moves it by far more, or makes it NaN."""


class OutOfRangeScores(ValueError):
    """A similarity of unit vectors outside [-1 - COSINE_SLACK, 1 + COSINE_SLACK] or not finite:
    gallery row `row` is corrupt."""

    def __init__(self, row: int, score: float):
        super().__init__(f"gallery row {row} scores {score:.3g} against a query, which no two unit vectors can")
        self.row, self.score = row, score


@dataclass(frozen=True)
class BlockPlan:
    """How many queries, and gallery rows (at least the widest image's), one block holds."""

    queries: int
    rows: int


@dataclass(frozen=True)
class GalleryShape:
    """What sizes the blocks: the gallery's shape and storage, and where it is searched."""

    n_rows: int
    dim: int
    itemsize: int
    widest_image: int
    one_row_each: bool
    n_devices: int


def budget_problem(value: object) -> str | None:
    """Config test of `search.memory_budget`: a size with its unit, above the SLACK every search
    holds besides its blocks (checked before any work; the floor of a given gallery, which
    its shape sets, is checked when it is searched)."""
    problem = size_problem(value)
    if problem is None and parse_size(str(value)) <= SLACK:
        return f"a search holds {format_size(SLACK)} besides its blocks of vectors; use more than that, or null"
    return problem


def block_bytes(plan: BlockPlan, gallery: GalleryShape, k: int) -> int:
    """Memory a search with `plan` holds at once: per device a row block (stored and widened),
    a query block and their similarities (4 bytes, and up to half that again for the rows of
    the queries still live; the per-image reduction's temporaries when images have several
    rows); the running top k with its merge temporaries; and SLACK."""
    per_cell = 6 if gallery.one_row_each else 34
    per_device = plan.rows * gallery.dim * (4 + gallery.itemsize) + plan.queries * gallery.dim * 4 + plan.queries * plan.rows * per_cell
    merging = plan.queries * (2 * k + TIE_MARGIN) * 20 * 3
    return gallery.n_devices * per_device + merging + SLACK


def plan_blocks(budget: int | None, n_queries: int, gallery: GalleryShape, k: int) -> BlockPlan:
    """The largest blocks (up to QUERY_BLOCK x ROW_BLOCK) that fit `budget` bytes (None: no
    bound), halving the rows down to the queries first (every query block is one pass over the
    gallery), then each in turn; a budget that cannot hold the smallest is a UserError."""
    floor_rows = max(gallery.widest_image, min(gallery.n_rows, MIN_ROW_BLOCK), 1)
    floor = BlockPlan(max(1, min(n_queries, MIN_QUERY_BLOCK)), floor_rows)
    plan = BlockPlan(max(1, min(n_queries, QUERY_BLOCK)), max(floor_rows, min(gallery.n_rows, ROW_BLOCK)))
    if budget is None:
        return plan
    while block_bytes(plan, gallery, k) > budget:
        if plan.rows > max(plan.queries, floor.rows) or plan.queries == floor.queries:
            if plan.rows == floor.rows:
                need = math.ceil(block_bytes(floor, gallery, k) / (1 << 20)) << 20
                raise UserError(
                    f"search.memory_budget={format_size(budget)} is below the {format_size(need)} that one block of "
                    f"{floor.queries} queries x {floor.rows} gallery rows of {gallery.dim} dims needs; "
                    f"raise it to at least search.memory_budget={format_size(need)}")
            plan = BlockPlan(plan.queries, max(floor.rows, plan.rows // 2))
        else:
            plan = BlockPlan(max(floor.queries, plan.queries // 2), plan.rows)
    return plan


def image_blocks(row_image: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """(lo, hi) row ranges of at most `rows` rows (more only for an image wider than that),
    each ending where an image's rows do. Rows of an image must be contiguous."""
    n = len(row_image)
    starts = np.flatnonzero(np.r_[True, row_image[1:] != row_image[:-1]]) if n else np.zeros(0, np.int64)
    if len(starts) != len(np.unique(row_image[starts])):  # an id starting two runs: split rows
        raise ValueError("exact search needs each image's rows to be contiguous")
    bounds = [0]
    while bounds[-1] < n:
        limit = bounds[-1] + rows
        if limit >= n:
            bounds.append(n)
            continue
        cut = int(starts[np.searchsorted(starts, limit, side="right") - 1])
        if cut <= bounds[-1]:  # one image wider than `rows`: the block is that image
            after = np.searchsorted(starts, bounds[-1], side="right")
            cut = int(starts[after]) if after < len(starts) else n
        bounds.append(cut)
    return list(zip(bounds[:-1], bounds[1:]))


def search_devices(device: torch.device) -> list[torch.device]:
    """Where row blocks are searched: every visible GPU for `cuda` without an index."""
    if device.type == "cuda" and device.index is None:
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [device]


def top_columns(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns) of a set of columns per row holding its top k in (score, lower
    column) order: the top k + TIE_MARGIN, or, where a tie runs past those, exactly the k
    best with the tie's lowest columns (the rest -inf). Unordered within: the merge sorts."""
    width = scores.shape[1]
    kept = min(k, width)
    probe = min(width, kept + TIE_MARGIN)
    values, columns = torch.topk(scores, probe, dim=1)
    if probe == width:
        return values, columns
    open_tie = (values[:, -1] == values[:, kept - 1]).nonzero().squeeze(1)
    if len(open_tie):
        tied_rows = scores[open_tie]
        edge = values[open_tie, kept - 1 : kept]
        above, tied = tied_rows > edge, tied_rows == edge
        keep = above | (tied & (tied.cumsum(1) <= kept - above.sum(1, keepdim=True)))
        chosen = keep.nonzero()[:, 1].view(len(open_tie), kept)
        values[open_tie] = -torch.inf
        values[open_tie, :kept] = tied_rows.gather(1, chosen)
        columns[open_tie, :kept] = chosen
    return values, columns


Candidates = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""(scores, image ids, rows), each (queries, places); PADDING ids where scores are -inf."""


def block_candidates(
    queries: torch.Tensor, chunk: torch.Tensor, owners: torch.Tensor, lo: int, k: int, floor: torch.Tensor, scores: torch.Tensor,
    cosines: bool = False,
) -> tuple[torch.Tensor, Candidates]:
    """The queries (indices into `queries`) that one row block (rows lo.. of images `owners`)
    has anything for, and their candidates; `scores` is room for the similarities. `floor` is
    each query's k-th score so far: a block whose best row is below it cannot change that
    query's top k, and is skipped for it before the costlier per-block top k (as faiss's heaps
    skip what cannot enter them). `cosines`: the vectors are unit vectors (OutOfRangeScores)."""
    scores = torch.mm(queries, chunk.T, out=scores[: len(queries) * len(chunk)].view(len(queries), len(chunk)))
    best = scores.amax(1)
    if cosines and not bool((best <= 1 + COSINE_SLACK).all() & (scores.amin() >= -1 - COSINE_SLACK)):  # NaN fails both
        query, column = (~(scores.abs() <= 1 + COSINE_SLACK)).nonzero()[0].tolist()
        raise OutOfRangeScores(lo + column, float(scores[query, column]))
    live = (best >= floor).nonzero().squeeze(1)
    if len(live) <= len(scores) // 2:  # copying the live rows out pays, and holds at most half the block
        scores = scores[live]
    else:
        live = torch.arange(len(scores), device=scores.device)
    if len(owners) == 1 or bool((owners[1:] > owners[:-1]).all()):  # one row per image, in order
        values, columns = top_columns(scores, k)
        images, rows = owners[columns], columns + lo
    else:
        first = int(owners.min())
        best, best_row = best_per_image(scores, (owners - first)[None], int(owners.max()) - first + 1, lo)
        values, columns = top_columns(best, k)
        images, rows = columns + first, best_row.gather(1, columns)
    return live, (values, torch.where(values == -torch.inf, PADDING, images), rows)


MAX_IMAGES = (1 << 32) - 1
"""Image ids share an int64 sort key with the score's 32 bits."""


def order_keys(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """int64 keys whose descending order is (score descending, image ascending): the float's
    bits made monotone as a signed integer (negatives flipped; -0.0 first made 0.0), above
    the image id counted down from MAX_IMAGES (padding last)."""
    bits = (scores + 0.0).view(torch.int32)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return (bits << 32) | (MAX_IMAGES - images.clamp(max=MAX_IMAGES))


def merge(state: Candidates, found: Candidates, k: int) -> Candidates:
    """The top k of both, best first, by score then lower image id (one top-k on order keys)."""
    scores, images, rows = (torch.cat(pair, dim=1) for pair in zip(state, found))
    best = torch.topk(order_keys(scores, images), k, dim=1).indices
    return scores.gather(1, best), images.gather(1, best), rows.gather(1, best)


@dataclass
class _Slot:
    """What one device reuses from block to block: host staging rows (float32, page-locked for
    a GPU, so its copy is one DMA) and room for a block's similarities on the device."""

    device: torch.device
    rows: np.ndarray
    scores: torch.Tensor

    @classmethod
    def make(cls, device: torch.device, rows: int, dim: int, queries: int) -> "_Slot":
        staging = torch.empty((rows, dim), dtype=torch.float32, pin_memory=device.type == "cuda").numpy()
        return cls(device, staging, torch.empty(rows * queries, dtype=torch.float32, device=device))

    def load(self, vectors: np.ndarray | MappedRows, lo: int, hi: int) -> torch.Tensor:
        """Rows lo:hi as float32 on the device: a float32 array's rows as they are, anything
        else widened into the staging rows."""
        if isinstance(vectors, MappedRows):
            rows = vectors.read_into(lo, hi, self.rows)
        elif vectors.dtype == np.float32:
            rows = np.ascontiguousarray(vectors[lo:hi])
        else:
            rows = self.rows[: hi - lo]
            widen_into(rows, np.ascontiguousarray(vectors[lo:hi]))
        return torch.from_numpy(rows).to(self.device)


def _top_k_of(
    queries: torch.Tensor,
    vectors: np.ndarray | MappedRows,
    owners: torch.Tensor,
    blocks: list[tuple[int, int]],
    slots: list[_Slot],
    k: int,
    pool: ThreadPoolExecutor,
    cosines: bool,
) -> Candidates:
    """One block of queries against every row block, `len(slots)` row blocks at a time (one a
    device), their candidates merged on the first device; returned on the CPU."""
    home = slots[0].device
    on_device = [queries.to(slot.device) for slot in slots]
    state = (torch.full((len(queries), k), -torch.inf, device=home), torch.full((len(queries), k), PADDING, device=home),
             torch.full((len(queries), k), -1, dtype=torch.int64, device=home))
    for group in range(0, len(blocks), len(slots)):
        floor = state[0][:, k - 1]

        def search(job: tuple[tuple[int, int], _Slot, torch.Tensor]) -> tuple[torch.Tensor, Candidates]:
            (lo, hi), slot, q = job
            return block_candidates(q, slot.load(vectors, lo, hi), owners[lo:hi].to(slot.device), lo, k, floor.to(slot.device),
                                    slot.scores, cosines)

        for live, candidates in pool.map(search, zip(blocks[group : group + len(slots)], slots, on_device)):
            live = live.to(home)
            merged = merge(tuple(t[live] for t in state), tuple(t.to(home) for t in candidates), k)
            for kept, new in zip(state, merged):
                kept[live] = new
    return tuple(t.cpu() for t in state)


def blockwise_top_k(
    queries: np.ndarray,
    vectors: np.ndarray | MappedRows,
    row_image: np.ndarray,
    k: int,
    devices: Sequence[torch.device],
    plan: BlockPlan,
    cosines: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, images, rows), each (queries, k), best first; -inf / -1 / -1 where a query has
    fewer than k images with rows. `cosines`: queries and rows are unit vectors, and a score
    that no two can have raises OutOfRangeScores."""
    row_image = np.asarray(row_image, dtype=np.int64)
    if k == 0 or len(queries) == 0:
        nothing = np.zeros((len(queries), k), np.int64)
        return nothing.astype(np.float32), nothing, nothing.copy()
    if len(row_image) and row_image.max() >= MAX_IMAGES:
        raise ValueError(f"exact search ranks at most {MAX_IMAGES} images")
    blocks = image_blocks(row_image, plan.rows)
    widest = max((hi - lo for lo, hi in blocks), default=0)
    slots = [_Slot.make(device, widest, vectors.shape[1], min(plan.queries, len(queries))) for device in devices]
    owners = torch.from_numpy(row_image)
    with ThreadPoolExecutor(len(slots)) as pool:  # a thread per device: each GPU computes while the others do
        out = [
            _top_k_of(torch.from_numpy(np.ascontiguousarray(queries[start : start + plan.queries], dtype=np.float32)),
                      vectors, owners, blocks, slots, k, pool, cosines)
            for start in range(0, len(queries), plan.queries)
        ]
    scores, images, rows = (torch.cat(part).numpy() for part in zip(*out))
    empty = images == PADDING
    return scores, np.where(empty, -1, images), np.where(empty, -1, rows)


def exact_search(
    queries: np.ndarray,
    vectors: np.ndarray | MappedRows,
    row_image: np.ndarray,
    n_images: int,
    k: int,
    device: torch.device = torch.device("cpu"),
    memory_budget: int | None = None,
    plan: BlockPlan | None = None,
    cosines: bool = False,
) -> ImageHits:
    """Exact max-aggregated image ranking over `vectors` (float16 allowed, or memory-mapped
    shards), in blocks of queries x rows that `memory_budget` bytes hold (`plan` sets them
    instead); on `cuda`, row blocks are spread over every visible GPU. `cosines`: queries and
    rows are unit vectors, so a score outside [-1, 1] means a corrupt row (`OutOfRangeScores`)."""
    k = min(k, n_images)
    devices = search_devices(device)
    if plan is None:
        widest = widest_image(row_image)
        gallery = GalleryShape(len(vectors), vectors.shape[1], vectors.dtype.itemsize, widest, widest <= 1, len(devices))
        plan = plan_blocks(memory_budget, len(queries), gallery, k)
    return ImageHits(*blockwise_top_k(queries, vectors, row_image, k, devices, plan, cosines))
