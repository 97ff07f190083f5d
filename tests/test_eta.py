import pytest

from kdq.eta import Eta, queue_empty_at, short, typical_epoch_s


def test_short_durations():
    assert [short(x) for x in (5, 89, 600, 7800, None)] == ["5s", "89s", "10m", "2h10m", "?"]


def test_a_training_remaining_time_is_its_epochs_to_go_times_seconds_per_epoch():
    p = {"epoch": 3, "epochs": 10, "phase": "training", "epoch_s": 60.0, "updated_at": 1000.0}
    e = Eta.of(p, started=700.0, now=1030.0)
    assert (e.elapsed_s, e.remaining_s) == (330.0, 420.0 - 30.0)  # 30 s into the fourth epoch
    assert e.cell() == "3/10 6m+6m"
    # without epoch_s: the attempt's time over the epochs done (100 s each here)
    e = Eta.of({"epoch": 3, "epochs": 10, "updated_at": 1000.0}, started=700.0, now=1000.0)
    assert e.remaining_s == 700.0


def test_the_teacher_phase_counts_pictures_embedded():
    p = {"epoch": 0, "epochs": 10, "phase": "teacher", "embedded": 3200, "to_embed": 10000}
    p |= {"teacher_s": 320.0, "updated_at": 1000.0}
    e = Eta.of(p, started=600.0, now=1000.0, typical_epoch_s=30.0)
    assert e.cell().startswith("teacher 3,200/10,000 ")
    assert e.remaining_s == pytest.approx(6800 * 0.1 + 10 * 30.0)
    e = Eta.of(p, started=600.0, now=1000.0)  # no time per epoch known yet: no remaining time
    assert e.remaining_s is None and e.cell() == "teacher 3,200/10,000 7m"


def test_typical_epoch_and_a_phase_without_estimate():
    assert typical_epoch_s([(600, 10), (1200, 10), (0, 5), (100, 0)]) == 90.0
    assert typical_epoch_s([]) is None
    e = Eta.of({"epoch": 0, "epochs": 4, "phase": "data"}, started=0.0, now=10.0)
    assert e.remaining_s is None and e.as_json()["phase"] == "data"


def test_queue_empty_at_simulates_the_launch_gate():
    # two slots: running ones hold theirs, queued ones take the first free one in order
    assert queue_empty_at([100.0], [50.0, 50.0, 200.0], slots=2, now=1000.0) == 1000.0 + 300.0
    assert queue_empty_at([], [60.0] * 4, slots=1, now=0.0) == 240.0
    assert queue_empty_at([], [], slots=3, now=5.0) == 5.0
    assert queue_empty_at([10.0], [None], slots=2, now=0.0) is None


def test_a_phase_without_counts_shows_its_name():
    assert Eta.of({"epoch": 0, "epochs": 60, "phase": "teacher"}, None, 0.0).cell() == "teacher"
    assert Eta.of({"epoch": 0, "epochs": 60, "phase": "data"}, 0.0, 120.0).cell() == "data 2m"
    assert Eta.of(None, 0.0, 30.0).cell() == "launching 30s"
