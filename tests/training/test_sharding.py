"""The sharding plan: which examples each process and micro-batch gets, and with what weight."""

import pytest

from unlearnkit.training.sharding import RetainStream, ShardingPlan, derived_seed, seeded_permutation, split_evenly


def test_split_evenly_by_hand():
    assert split_evenly([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert split_evenly([1, 2, 3, 4, 5], 4) == [[1, 2], [3], [4], [5]]
    assert split_evenly([1, 2], 3) == [[1], [2], []]
    assert split_evenly([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]


def test_two_processes_get_the_expected_positions():
    # 10 examples, 2 per micro-batch, 2 processes: steps of 4, 4, 2 examples
    plan = ShardingPlan(n_forget=10, batch_size=2, accumulation=1, processes=2, seed=7)
    order = plan.epoch_order(0)
    assert sorted(order) == list(range(10))
    assert plan.steps_per_epoch == 3
    assert [m.forget for m in plan.micro_batches(0, 0, rank=0)] == [order[0:2]]
    assert [m.forget for m in plan.micro_batches(0, 0, rank=1)] == [order[2:4]]
    assert [m.forget for m in plan.micro_batches(0, 1, rank=1)] == [order[6:8]]
    # the short last step gives one example to each process, each weighing half the step
    last = plan.micro_batches(0, 2, rank=0) + plan.micro_batches(0, 2, rank=1)
    assert [m.forget for m in last] == [[order[8]], [order[9]]]
    assert [m.weight for m in last] == [0.5, 0.5]


def test_accumulation_and_processes_are_interchangeable():
    """1 process × accumulation 4, 2 × 2 and 4 × 1 compute the same set of micro-batches every step."""
    plans = [ShardingPlan(13, 2, acc, procs, seed=1, n_retain=5) for acc, procs in ((4, 1), (2, 2), (1, 4))]
    for epoch in range(2):
        for step in range(plans[0].steps_per_epoch):
            seen = []
            for plan in plans:
                micro = [m for rank in range(plan.processes) for m in plan.micro_batches(epoch, step, rank)]
                seen.append(sorted((m.slot, m.forget, m.retain, m.weight) for m in micro))
            assert seen[0] == seen[1] == seen[2]


def test_rank_gets_micro_batches_in_slot_order():
    plan = ShardingPlan(16, 1, accumulation=4, processes=2, seed=0)
    assert [m.slot for m in plan.micro_batches(0, 0, rank=0)] == [0, 2, 4, 6]
    assert [m.slot for m in plan.micro_batches(0, 0, rank=1)] == [1, 3, 5, 7]


@pytest.mark.parametrize("n, batch, acc, procs", [(10, 2, 1, 2), (11, 3, 2, 2), (5, 4, 1, 3), (1, 2, 2, 1)])
def test_every_epoch_visits_each_example_once_with_weights_summing_to_one(n, batch, acc, procs):
    plan = ShardingPlan(n, batch, acc, procs, seed=3)
    for epoch in range(3):
        visited = []
        for step in range(plan.steps_per_epoch):
            micro = [m for rank in range(procs) for m in plan.micro_batches(epoch, step, rank)]
            visited += [i for m in micro for i in m.forget]
            assert sum(m.weight for m in micro) == pytest.approx(1.0)
            for m in micro:
                assert len(m.forget) <= batch and m.weight == len(m.forget) / sum(len(x.forget) for x in micro)
        assert sorted(visited) == list(range(n))


def test_short_last_step_leaves_no_process_idle_unless_smaller_than_world():
    plan = ShardingPlan(n_forget=5, batch_size=2, accumulation=1, processes=4, seed=0)  # one step of 5 examples
    sizes = [[len(m.forget) for m in plan.micro_batches(0, 0, rank)] for rank in range(4)]
    assert sizes == [[2], [1], [1], [1]]
    tiny = ShardingPlan(n_forget=3, batch_size=2, accumulation=1, processes=4, seed=0)
    assert [len(tiny.micro_batches(0, 0, rank)) for rank in range(4)] == [1, 1, 1, 0]


def test_epoch_orders_are_seeded_and_differ_between_epochs():
    a = ShardingPlan(50, 2, 1, 1, seed=0)
    b = ShardingPlan(50, 4, 2, 3, seed=0)  # the order does not depend on batch layout
    assert a.epoch_order(0) == b.epoch_order(0)
    assert a.epoch_order(1) == b.epoch_order(1)
    assert a.epoch_order(0) != a.epoch_order(1)
    assert ShardingPlan(50, 2, 1, 1, seed=1).epoch_order(0) != a.epoch_order(0)


def test_retain_stream_cycles_through_fresh_permutations():
    stream = RetainStream(n_retain=4, seed=2)
    elements = [stream[t] for t in range(12)]
    cycles = [elements[0:4], elements[4:8], elements[8:12]]
    assert all(sorted(c) == [0, 1, 2, 3] for c in cycles)
    assert cycles[0] == seeded_permutation(4, 2, "retain", 0)
    assert stream[5] == elements[5]  # random access gives the same element


def test_retain_rows_pair_with_forget_positions_across_epochs():
    plan = ShardingPlan(n_forget=3, batch_size=2, accumulation=1, processes=1, seed=4, n_retain=5)
    stream = RetainStream(5, seed=4)
    # epoch 1, step 0 covers forget positions 0-1 of that epoch, i.e. run-wide examples 3 and 4
    (micro,) = plan.micro_batches(1, 0, rank=0)
    assert micro.retain == [stream[3], stream[4]]
    (last,) = plan.micro_batches(1, 1, rank=0)
    assert last.retain == [stream[5]] and len(last.forget) == 1


def test_derived_seed_is_stable_and_separates_streams():
    assert derived_seed(0, "forget", 1) == derived_seed(0, "forget", 1)
    assert len({derived_seed(0, "forget", 1), derived_seed(0, "retain", 1), derived_seed(1, "forget", 0)}) == 3
    assert 0 <= derived_seed(123, "x") < 2**63

