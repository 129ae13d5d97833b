"""Rank shards: disjoint, equal-sized, the union of the k-th batches is one big batch, resumable."""

from __future__ import annotations

from crossover_sgd.training.sampler import ShardSampler


def shards(n_items, world, chunk=1, epoch=0, seed=0):
    out = []
    for rank in range(world):
        sampler = ShardSampler(n_items, rank, world, seed=seed, chunk=chunk)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def test_shards_are_disjoint_equal_and_cut_to_whole_steps():
    parts = shards(1000, 3, chunk=16)
    assert {len(p) for p in parts} == {320}  # 333 per rank, cut to a multiple of 16
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat)


def test_union_of_kth_batches_is_the_single_process_batch():
    batch, world = 8, 4
    parts = shards(500, world, chunk=batch)
    single = shards(500, 1, chunk=batch * world)[0]
    for k in range(len(parts[0]) // batch):
        union = {i for p in parts for i in p[k * batch:(k + 1) * batch]}
        assert union == set(single[k * batch * world:(k + 1) * batch * world])


def test_epochs_reshuffle_and_seeds_agree_across_ranks():
    assert shards(100, 2, epoch=0) != shards(100, 2, epoch=1)
    assert shards(100, 2, epoch=4, seed=9) == shards(100, 2, epoch=4, seed=9)


def test_skip_resumes_mid_epoch():
    sampler = ShardSampler(100, 1, 2, seed=1)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, skip=20)
    assert list(sampler) == whole[20:] and len(sampler) == len(whole) - 20
