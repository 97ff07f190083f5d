import numpy as np

from kdq.dedup import duplicate_groups, exact_pairs, group_ids, near_pairs


def test_exact_pairs_link_each_copy_to_the_first():
    assert exact_pairs(["a", "b", "a", "c", "a"]) == [(2, 0), (4, 0)]


def test_groups_are_transitive_and_singletons_stay_alone():
    gid = group_ids(5, [(0, 1), (1, 3)])
    assert gid[0] == gid[1] == gid[3] and len({gid[0], gid[2], gid[4]}) == 3
    assert list(group_ids(3, [])) == [0, 1, 2]


def test_near_needs_both_keys():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, size=(4, 64))
    colour = rng.integers(0, 255, size=(4, 8, 8, 3))
    bits[1] = bits[0]
    bits[1, :3] ^= 1  # 3 bits off
    colour[1] = np.clip(colour[0].astype(int) + 2, 0, 255)  # close colours: a near copy
    bits[2] = bits[0]  # the same hash ...
    # ... but other colours: another picture with the same layout
    assert near_pairs(bits, colour, near_bits=6, near_colour=6.0) == [(0, 1)]
    gid = duplicate_groups(["x", "y", "z", "x"], bits, colour, near_bits=6, near_colour=6.0)
    assert gid[0] == gid[1] == gid[3] != gid[2]
