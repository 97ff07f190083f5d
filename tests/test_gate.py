"""The launch gate: how many trainings run at once per backend, and which queued experiment goes next."""

from types import SimpleNamespace

from kdq import gate


def exp(id, priority=0, created_at=0.0):
    return SimpleNamespace(id=id, priority=priority, created_at=created_at)


def test_higher_priority_first_then_oldest_then_lowest_id():
    queued = [exp(1, 0, 1.0), exp(2, 100, 5.0), exp(3, 0, 0.5), exp(4, 0, 0.5)]
    assert [e.id for e in sorted(queued, key=gate.launch_order)] == [2, 3, 4, 1]


def test_an_experiment_launches_only_into_a_free_slot_and_only_when_next_in_line():
    queued = [exp(1, 0, 1.0), exp(2, 0, 2.0), exp(3, 0, 3.0)]
    assert gate.may_launch(queued[0], queued, running=0, limit=1)
    assert not gate.may_launch(queued[1], queued, running=0, limit=1)  # someone is ahead of it
    assert not gate.may_launch(queued[0], queued, running=1, limit=1)  # no free slot
    assert gate.may_launch(queued[1], queued, running=0, limit=2)
    assert not gate.may_launch(queued[2], queued, running=0, limit=2)
    assert gate.may_launch(queued[2], queued, running=0, limit=8)
