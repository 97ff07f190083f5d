"""Which images hold the same picture: identical bytes, or near copies (resized, recompressed).

Two keys make a near copy: binary image hashes within ``near_bits`` bits *and* small colour
thumbnails within ``near_colour`` grey levels (mean absolute difference). Hamming distances for all
pairs are one matrix product per block of rows; colours are compared only for the few pairs the
hashes let through, so 10,000 images take seconds. Groups are the connected components of the
resulting graph (scipy). The trainer's split (kdq.train.data) and the dataset inspector
(kdq.datainspect) both use this, each with the hash and thresholds that suit it. Pure: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def near_pairs(
    bits: np.ndarray, colour: np.ndarray, near_bits: int, near_colour: float, block: int = 2048
) -> list[tuple[int, int]]:
    """Pairs ``i < j`` whose hashes (rows of 0/1 ``bits``) and colour thumbnails are both close."""
    h = np.asarray(bits, dtype=np.float32)
    flat = np.asarray(colour, dtype=np.float32).reshape(len(h), -1)
    out = []
    for start in range(0, len(h), block):
        hb = h[start : start + block]
        dist = hb @ (1 - h).T + (1 - hb) @ h.T
        for a, j in zip(*np.nonzero(dist <= near_bits)):
            i = start + int(a)
            if i < j and np.abs(flat[i] - flat[j]).mean() <= near_colour:
                out.append((i, int(j)))
    return out


def exact_pairs(digests: list[str]) -> list[tuple[int, int]]:
    """Each image paired with the first image of identical bytes."""
    first: dict[str, int] = {}
    pairs = []
    for i, d in enumerate(digests):
        j = first.setdefault(d, i)
        if j != i:
            pairs.append((i, j))
    return pairs


def group_ids(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """A group id per image (0..groups-1): images linked by a pair, directly or not, share one."""
    if not pairs:
        return np.arange(n)
    a, b = np.array(pairs).T
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def duplicate_groups(
    digests: list[str], bits: np.ndarray, colour: np.ndarray, near_bits: int, near_colour: float
) -> np.ndarray:
    """Group id per image: identical bytes or near copies share a group."""
    pairs = exact_pairs(digests) + near_pairs(bits, colour, near_bits, near_colour)
    return group_ids(len(digests), pairs)
