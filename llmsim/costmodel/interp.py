"""Piecewise-linear lookups on measured grids, built once and evaluated in pure Python.

The hot path of the profile cost model runs tens of thousands of lookups per second, so
tables are turned into sorted Python lists at construction and evaluated with ``bisect``
and scalar arithmetic (a numpy call per lookup costs more than the whole lookup).

Rules (shared by every table):

* **On a grid point** the measured value is returned exactly.
* **Between grid points** values are interpolated linearly along each axis; an N-D grid is
  interpolated axis by axis (nested: the first axis brackets two sub-grids, each evaluated
  recursively), which is multilinear interpolation on full tensor grids and still exact on
  every measured point of a ragged one.
* **Above the grid** an axis is extrapolated linearly through its last two points, with the
  slope floored at 0 (every axis here measures work: more of it never takes less time); a
  1-D grid may instead scale proportionally, ``y(x) = y(x_max) * x / x_max``, the rule for
  token-scaled operators, whose kernels are throughput-bound at the top of the grid.
* **Below the grid** the first value is held: the smallest measured points are launch-bound
  (e.g. one attention layer costs 7.77-8.57 us for 16-64 new tokens on RTXPRO6000), so
  a slope extrapolated below them would only amplify noise.
* Every lookup that leaves the grid on any axis reports it, and the cost model counts it.

Ragged grids (the LLMServingSim attention grid is a x2 grid overlaid with a x1.5 grid that
covers fewer KV lengths) are handled by *coverage groups*: at each node, children whose
sub-grids span different boxes are grouped, and a query only brackets among children whose
box contains its remaining coordinates, so no sub-grid is asked to extrapolate while a
neighbour covers the point.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from llmsim.errors import InvariantError

Coord = float | int


class Grid1D:
    """A 1-D table ``y(x)`` (sorted, unique ``xs``).

    Attributes:
        xs: ascending grid coordinates.
        ys: values at ``xs``.
        proportional_above: above the grid, scale ``ys[-1]`` by ``x / xs[-1]`` instead of
            extrapolating through the last two points.
    """

    __slots__ = ("xs", "ys", "proportional_above", "x_min", "x_max")

    def __init__(self, xs: Sequence[Coord], ys: Sequence[float], *,
                 proportional_above: bool = False) -> None:
        if len(xs) != len(ys) or not xs:
            raise ValueError("xs and ys must be non-empty and of equal length")
        pairs = sorted(zip(xs, ys, strict=True))
        self.xs = [float(x) for x, _ in pairs]
        self.ys = [float(y) for _, y in pairs]
        for a, b in pairwise(self.xs):
            if a == b:
                raise ValueError(f"duplicate grid coordinate {a}")
        self.proportional_above = proportional_above
        self.x_min = self.xs[0]
        self.x_max = self.xs[-1]

    def __call__(self, x: Coord) -> tuple[float, bool]:
        """``(y, extrapolated)`` at ``x``."""
        xs = self.xs
        i = bisect_left(xs, x)
        n = len(xs)
        if i < n:
            xi = xs[i]
            if xi == x:
                return self.ys[i], False
            if i == 0:
                return self.ys[0], True
            x0 = xs[i - 1]
            y0 = self.ys[i - 1]
            return y0 + (self.ys[i] - y0) * (x - x0) / (xi - x0), False
        return self.above(x), True

    def above(self, x: Coord) -> float:
        """Value above the grid (``x > x_max``) by this grid's rule."""
        ys = self.ys
        if self.proportional_above:
            return ys[-1] * x / self.x_max if self.x_max > 0 else ys[-1]
        if len(ys) == 1:
            return ys[-1]
        slope = (ys[-1] - ys[-2]) / (self.xs[-1] - self.xs[-2])
        return ys[-1] + max(slope, 0.0) * (x - self.xs[-1])


@dataclass(slots=True)
class _Node:
    """An internal node: children along one axis (``leaf`` when it is the last axis)."""

    keys: list[float]
    # _Node children, or float values when ``leaf``: a flag-tagged union mypy cannot follow
    # (an isinstance per lookup in this hot loop would cost), hence Any.
    kids: list[Any]
    leaf: bool
    # coverage groups: (los, his, bit) boxes over the remaining axes; None = one group
    groups: list[tuple[tuple[float, ...], tuple[float, ...], int]] | None = None
    merged: dict[int, tuple[list[float], list[Any]]] | None = None
    # float64 copies of keys and (leaf) kids for the vectorized lookups, built on first use
    arrays: tuple[np.ndarray, np.ndarray | None] | None = None


def _box(points: list[tuple[tuple[float, ...], float]], depth: int
         ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    dims = len(points[0][0])
    los = tuple(min(p[0][d] for p in points) for d in range(depth, dims))
    his = tuple(max(p[0][d] for p in points) for d in range(depth, dims))
    return los, his


def _build(points: list[tuple[tuple[float, ...], float]], depth: int) -> _Node:
    dims = len(points[0][0])
    if depth == dims - 1:
        pts = sorted((p[0][depth], p[1]) for p in points)
        for a, b in pairwise(pts):
            if a[0] == b[0]:
                raise ValueError(f"duplicate grid point at {points[0][0][:depth]} + {a[0]}")
        return _Node(keys=[k for k, _ in pts], kids=[v for _, v in pts], leaf=True)
    by_key: dict[float, list[tuple[tuple[float, ...], float]]] = {}
    for p in points:
        by_key.setdefault(p[0][depth], []).append(p)
    keys = sorted(by_key)
    kids = [_build(by_key[k], depth + 1) for k in keys]
    boxes = [_box(by_key[k], depth + 1) for k in keys]
    distinct = sorted(set(boxes))
    node = _Node(keys=keys, kids=kids, leaf=False)
    if len(distinct) > 1:
        bit_of = {box: 1 << i for i, box in enumerate(distinct)}
        node.groups = [(los, his, bit_of[(los, his)]) for los, his in distinct]
        node.merged = {}
        for mask in range(1, 1 << len(distinct)):
            sel = [(k, kid) for k, kid, box in zip(keys, kids, boxes, strict=True) if bit_of[box] & mask]
            node.merged[mask] = ([k for k, _ in sel], [kid for _, kid in sel])
    return node


def _eval(node: _Node, q: tuple[Coord, ...], depth: int, ex: list[int]) -> float:
    keys, kids = node.keys, node.kids
    if node.groups is not None:
        mask = 0
        for los, his, bit in node.groups:
            d = depth + 1
            for lo, hi in zip(los, his, strict=True):
                v = q[d]
                if v < lo or v > hi:
                    break
                d += 1
            else:
                mask |= bit
        if mask:
            if node.merged is None:
                raise InvariantError("grid node has coverage groups but no merged children")
            keys, kids = node.merged[mask]
    x = q[depth]
    i = bisect_left(keys, x)
    n = len(keys)
    leaf = node.leaf
    if i < n and keys[i] == x:
        return kids[i] if leaf else _eval(kids[i], q, depth + 1, ex)
    if i == 0:
        ex[0] += 1
        return kids[0] if leaf else _eval(kids[0], q, depth + 1, ex)
    if i == n:
        ex[0] += 1
        if n == 1:
            return kids[0] if leaf else _eval(kids[0], q, depth + 1, ex)
        i = n - 1
        x0, x1 = keys[i - 1], keys[i]
        y0 = kids[i - 1] if leaf else _eval(kids[i - 1], q, depth + 1, ex)
        y1 = kids[i] if leaf else _eval(kids[i], q, depth + 1, ex)
        return y1 + max((y1 - y0) / (x1 - x0), 0.0) * (x - x1)
    x0, x1 = keys[i - 1], keys[i]
    y0 = kids[i - 1] if leaf else _eval(kids[i - 1], q, depth + 1, ex)
    y1 = kids[i] if leaf else _eval(kids[i], q, depth + 1, ex)
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _kid_values(kids: list[Any], leaf: bool, which: np.ndarray, q: np.ndarray, rows: np.ndarray,
                depth: int, ex: np.ndarray) -> np.ndarray:
    """Value of child ``which[j]`` of a node at query ``rows[j]`` (``_eval_rows`` below)."""
    if leaf:
        values: np.ndarray = np.asarray(kids, dtype=np.float64)[which]
        return values
    out = np.empty(len(rows), dtype=np.float64)
    for c in np.unique(which).tolist():
        sel = which == c
        out[sel] = _eval_rows(kids[c], q, rows[sel], depth + 1, ex)
    return out


def _eval_level(keys: list[float], kids: list[Any], leaf: bool, q: np.ndarray, rows: np.ndarray,
                depth: int, ex: np.ndarray) -> np.ndarray:
    """:func:`_eval` below its coverage-group choice, for the queries ``q[rows]`` at once."""
    karr = np.asarray(keys, dtype=np.float64)
    n = len(keys)
    x = q[rows, depth]
    i = np.searchsorted(karr, x, side="left")
    hit = (i < n) & (karr[np.minimum(i, n - 1)] == x)
    below = (i == 0) & ~hit
    above = i == n
    two = above & (n > 1)  # above the grid, through its last two points
    mid = ~(hit | below | above)
    ex[rows[below | above]] = True
    # the lower (or only) child each query needs, and the upper one where it needs two
    lo = np.where(hit, i, np.where(mid, i - 1, np.where(two, n - 2, 0)))
    y0 = _kid_values(kids, leaf, lo, q, rows, depth, ex)
    out = y0.copy()
    pair = mid | two
    if pair.any():
        hi = np.where(mid, i, n - 1)[pair]
        y1 = _kid_values(kids, leaf, hi, q, rows[pair], depth, ex)
        a = y0[pair]
        xp = x[pair]
        x0 = karr[np.where(mid, i - 1, n - 2)[pair]]
        x1 = karr[hi]
        m = mid[pair]
        # the scalar formulas of _eval, operation for operation (same IEEE results)
        inner = a + (y1 - a) * (xp - x0) / (x1 - x0)
        slope = (y1 - a) / (x1 - x0)
        slope = np.where(0.0 > slope, 0.0, slope)  # Python's max(slope, 0.0)
        outer = y1 + slope * (xp - x1)
        out[pair] = np.where(m, inner, outer)
    return out


def _eval_leaf(node: _Node, x: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """:func:`_eval` of a leaf (last axis, no coverage groups) at every ``x``; ORs into
    ``ex`` (same shape) whether each query left the grid. The scalar formulas, operation
    for operation."""
    arrays = node.arrays
    if arrays is None:
        arrays = node.arrays = (np.asarray(node.keys, dtype=np.float64),
                                np.asarray(node.kids, dtype=np.float64))
    karr, varr = arrays
    if varr is None:
        raise InvariantError("leaf grid node without values")
    n = len(karr)
    i = np.searchsorted(karr, x, side="left")
    top = np.minimum(i, n - 1)
    hit = (i < n) & (karr[top] == x)
    out = varr[top]  # hits; below the grid (i == 0): the first value
    below = (i == 0) & ~hit
    above = i == n
    if below.any() or above.any():
        ex |= below | above
    if n == 1:
        return out
    mid = ~(hit | below | above)
    if mid.any():
        lo = np.maximum(i - 1, 0)
        y0, y1, x0, x1 = varr[lo], varr[top], karr[lo], karr[top]
        with np.errstate(divide="ignore", invalid="ignore"):  # rows not mid: discarded
            inner = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        out = np.where(mid, inner, out)
    if above.any():
        y0, y1, x0, x1 = varr[n - 2], varr[n - 1], karr[n - 2], karr[n - 1]
        slope = (y1 - y0) / (x1 - x0)
        slope = 0.0 if 0.0 > slope else slope  # Python's max(slope, 0.0)
        out = np.where(above, y1 + slope * (x - x1), out)
    return out


def _eval_rows(node: _Node, q: np.ndarray, rows: np.ndarray, depth: int,
               ex: np.ndarray) -> np.ndarray:
    """:func:`_eval` for the queries ``q[rows]`` (float64, one row per query), vectorized;
    sets ``ex[row]`` for each query that left the grid. Bit-identical to :func:`_eval`:
    the same IEEE operations in the same order, per query."""
    if node.groups is None:
        if node.leaf:
            sub = np.zeros(len(rows), dtype=bool)
            out = _eval_leaf(node, q[rows, depth], sub)
            ex[rows[sub]] = True
            return out
        return _eval_level(node.keys, node.kids, node.leaf, q, rows, depth, ex)
    mask = np.zeros(len(rows), dtype=np.int64)
    for los, his, bit in node.groups:
        inside = np.ones(len(rows), dtype=bool)
        for j, (lo, hi) in enumerate(zip(los, his, strict=True)):
            v = q[rows, depth + 1 + j]
            inside &= ~((v < lo) | (v > hi))
        mask[inside] |= bit
    out = np.empty(len(rows), dtype=np.float64)
    for mv in np.unique(mask).tolist():
        sel = mask == mv
        if mv:
            if node.merged is None:
                raise InvariantError("grid node has coverage groups but no merged children")
            keys, kids = node.merged[mv]
        else:
            keys, kids = node.keys, node.kids
        out[sel] = _eval_level(keys, kids, node.leaf, q, rows[sel], depth, ex)
    return out


class GridND:
    """An N-D table on a (possibly ragged) grid of measured points.

    Args:
        coords: one tuple of N coordinates per point.
        values: the measured value at each point.

    Raises:
        ValueError: empty input, mismatched lengths or a duplicated point.
    """

    __slots__ = ("_root", "ndim", "num_points")

    def __init__(self, coords: Sequence[Sequence[Coord]], values: Sequence[float]) -> None:
        if not coords or len(coords) != len(values):
            raise ValueError("coords and values must be non-empty and of equal length")
        points = [(tuple(float(c) for c in xs), float(v)) for xs, v in zip(coords, values, strict=True)]
        self.ndim = len(points[0][0])
        if any(len(p[0]) != self.ndim for p in points):
            raise ValueError("every point needs the same number of coordinates")
        self.num_points = len(points)
        self._root = _build(points, 0)

    def __call__(self, *q: Coord) -> tuple[float, bool]:
        """``(value, extrapolated)`` at coordinates ``q``."""
        ex = [0]
        value = _eval(self._root, q, 0, ex)
        return value, ex[0] > 0

    def many(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(values, extrapolated)`` at many queries at once.

        Args:
            q: shape ``(m, ndim)``, float64 (an int coordinate converts exactly below 2^53).

        Returns:
            Two arrays of shape ``(m,)``: float64 values, equal bit for bit to calling the
            grid on each row, and bools (the row left the grid on some axis).
        """
        q = np.asarray(q, dtype=np.float64)
        ex = np.zeros(len(q), dtype=bool)
        if not len(q):
            return np.empty(0, dtype=np.float64), ex
        return _eval_rows(self._root, q, np.arange(len(q)), 0, ex), ex

    def many_at(self, x0: Coord, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`many` of the 2-D queries ``(x0, xs[j])`` (one first coordinate): the
        first axis is bracketed once, in scalar code, as :func:`_eval` does, and only the
        second is vectorized (a fraction of the array operations of :meth:`many`).
        Bit-identical to calling the grid on each query.

        Raises:
            ValueError: the grid is not 2-D.
        """
        if self.ndim != 2:
            raise ValueError("many_at needs a 2-D grid")
        root = self._root
        q = np.empty((len(xs), 2), dtype=np.float64)
        q[:, 0] = x0
        q[:, 1] = xs
        if root.groups is not None or not len(xs):
            return self.many(q)
        keys, kids = root.keys, root.kids
        ex = np.zeros(len(xs), dtype=bool)
        rows = np.arange(len(xs))
        x = float(x0)
        i = bisect_left(keys, x)
        n = len(keys)
        if i < n and keys[i] == x:
            return _eval_rows(kids[i], q, rows, 1, ex), ex
        if i == 0 or (i == n and n == 1):
            ex[:] = True
            return _eval_rows(kids[0], q, rows, 1, ex), ex
        if i == n:
            ex[:] = True
            a, b = keys[n - 2], keys[n - 1]
            y0 = _eval_rows(kids[n - 2], q, rows, 1, ex)
            y1 = _eval_rows(kids[n - 1], q, rows, 1, ex)
            slope = (y1 - y0) / (b - a)
            slope = np.where(0.0 > slope, 0.0, slope)  # Python's max(slope, 0.0)
            return y1 + slope * (x - b), ex
        a, b = keys[i - 1], keys[i]
        y0 = _eval_rows(kids[i - 1], q, rows, 1, ex)
        y1 = _eval_rows(kids[i], q, rows, 1, ex)
        return y0 + (y1 - y0) * (x - a) / (b - a), ex

    def axis_range(self) -> tuple[float, float]:
        """Range of the first axis."""
        return self._root.keys[0], self._root.keys[-1]
