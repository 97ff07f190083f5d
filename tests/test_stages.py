import pytest

from kdq.stages import (
    LIVE,
    PIPELINE,
    TERMINAL,
    IllegalTransition,
    Stage,
    after_ready,
    can_move,
    check_move,
    next_stage,
)


def test_happy_path_is_the_pipeline():
    stage = Stage.QUEUED
    seen = [stage]
    while stage is not Stage.DONE:
        stage = next_stage(stage)
        seen.append(stage)
    assert tuple(seen) == PIPELINE
    with pytest.raises(ValueError):
        next_stage(Stage.DONE)


@pytest.mark.parametrize("stage", sorted(LIVE))
def test_every_live_stage_can_fail_or_be_cancelled(stage):
    assert can_move(stage, Stage.FAILED) and can_move(stage, Stage.CANCELLED)


@pytest.mark.parametrize("stage", sorted(TERMINAL))
def test_terminal_stages_only_leave_by_retry_or_submit(stage):
    for dst in Stage:
        allowed = can_move(stage, dst)
        if dst is Stage.QUEUED:
            assert allowed == (stage is not Stage.DONE)
        elif dst is Stage.READY:
            assert allowed == (stage in (Stage.DONE, Stage.SKIPPED))
        else:
            assert not allowed, (stage, dst)


def test_no_skipping_ahead():
    assert not can_move(Stage.QUEUED, Stage.TRAINING)
    assert not can_move(Stage.TRAINING, Stage.READY)
    with pytest.raises(IllegalTransition, match="from training to ready"):
        check_move(Stage.TRAINING, Stage.READY)


def test_ready_can_end_without_submission_and_submission_can_be_put_back():
    assert can_move(Stage.READY, Stage.DONE) and can_move(Stage.READY, Stage.SKIPPED)
    assert can_move(Stage.SUBMITTING, Stage.READY)


def test_after_ready_policy():
    assert after_ready("never") is Stage.DONE
    for policy in ("if_better", "always", "manual"):
        assert after_ready(policy) is None


def test_a_trial_stopped_by_the_pruner_ends_pruned_from_training_only():
    assert can_move(Stage.TRAINING, Stage.PRUNED)
    assert Stage.PRUNED in TERMINAL and Stage.PRUNED not in LIVE
    for src in set(Stage) - {Stage.TRAINING}:
        assert not can_move(src, Stage.PRUNED), src
    assert can_move(Stage.PRUNED, Stage.QUEUED)  # kdq retry trains it to the end as a plain experiment
