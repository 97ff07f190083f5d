"""Refit on every picture: once a run with ``data.refit = true`` is validated, its refit is queued: the
same spec trained on train + val + holdout (``data.train_on = "all"``) for the run's best epoch count,
with no early stopping, and teacher logits out-of-fold over all pictures.

    refit.spawn(store, parent, metrics)   # queue the refit once; its row's ``refit_of`` is the parent
    refit.carry(store, exp, metrics)      # a refit's metrics, plus its parent's F1 and interval
    refit.replace(store, exp)             # a validated refit takes its waiting parent's place
    refit.coming(store)                   # {parent id: refit id} for refits still on their way

A refit has no holdout of its own, so its expected F1 is its parent's (``parent_f1``, ``parent_f1_ci``:
its holdout F1 and 90% interval). The submission scheduler treats the refit as the parent's successor:
the parent waits in ``ready`` while its refit is queued or training (except in the deadline's final
windows), and once the refit is validated the parent is done, never uploaded. A refit that fails or is
cancelled lets the parent be judged by its policy like any other model.
"""

from __future__ import annotations

from kdq.experiment import Experiment, local_f1
from kdq.log import get_logger
from kdq.spec import ExperimentSpec
from kdq.stages import WORKING, Stage
from kdq.store import Store

log = get_logger("kdq.refit")


def spec_for(spec: ExperimentSpec, best_epoch: int) -> ExperimentSpec:
    """The refit's spec: every picture, exactly ``best_epoch`` epochs, nothing to validate on (so no
    early stopping and no bias tuned on validation)."""
    doc = spec.model_dump()
    doc["name"] = f"{spec.name} (refit)"[:200]
    doc["data"].update(refit=False, train_on="all")
    doc["train"].update(epochs=max(1, int(best_epoch)), patience=None, tune_bias=False)
    doc["search"] = None
    return ExperimentSpec.model_validate(doc)


def spawn(store: Store, parent: Experiment, metrics: dict) -> int | None:
    """Queue ``parent``'s refit (its validated ``metrics`` give the best epoch), unless it has one already;
    the refit's id, or ``None`` when none is due."""
    if not parent.spec.data.refit or parent.refit_of is not None:
        return None
    if any(e.refit_of == parent.id for e in store.list() if e.stage is not Stage.CANCELLED):
        return None
    best = int(metrics.get("best_epoch") or parent.spec.train.epochs)
    [i] = store.add(
        [(parent.source, spec_for(parent.spec, best))],
        priority=parent.priority,
        force=True,  # a parent's retry may queue the same refit spec again
        columns={"refit_of": parent.id},
    )
    why = f"refit queued: experiment {i}, {best} epochs on every picture (train + val + holdout)"
    store.event(parent.id, "refit", why)
    log.info("refit queued", parent=parent.id, exp=i, epochs=best)
    return i


def carry(store: Store, exp: Experiment, metrics: dict) -> dict:
    """A refit's metrics with its parent's F1 and interval, the F1 it is expected to score."""
    if exp.refit_of is None:
        return metrics
    f1, ci, holdout = local_f1(store.get(exp.refit_of).metrics)
    return {
        **metrics,
        "refit_of": exp.refit_of,
        "parent_f1": f1,
        "parent_f1_ci": list(ci) if ci else None,
        "parent_holdout": holdout,
    }


def replace(store: Store, exp: Experiment) -> None:
    """A validated refit is submitted in its parent's place: the parent, if still waiting, is done."""
    if exp.refit_of is None:
        return
    why = f"replaced by its refit, experiment {exp.id}, trained on every picture: never uploaded"
    if store.move(exp.refit_of, Stage.READY, Stage.DONE, why):
        log.info("refit replaces its parent", parent=exp.refit_of, exp=exp.id)


def coming(store: Store) -> dict[int, int]:
    """Parents whose refit is still queued or training: ``{parent id: refit id}``."""
    return {e.refit_of: e.id for e in store.list(set(WORKING)) if e.refit_of is not None}
