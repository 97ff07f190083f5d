"""The Optuna side of a search: its study on disk, the sampler, the pruner, the space as distributions,
and what a finished trial scores.

The study lives in ``$KDQ_HOME/search/<name>.journal``, Optuna's journal file storage (an append-only
log of operations; docs/search.md says why not its RDB storage on SQLite). Only the worker writes it;
``kdq search status`` and ``kdq search report`` read it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from kdq.search.space import TWO_SIDED, Range, SearchSpec
from kdq.search.spec import is_int_field

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Successive halving: the first look at a quarter of the epochs (earlier F1s are mostly warm-up noise),
# then at twice that, and so on; a trial goes on past each look only if it is in the better half there.
FIRST_LOOK = 0.25
REDUCTION_FACTOR = 2
# Hyperband (the default): successive halvings side by side, each keeping the best third (Optuna's
# reduction factor). Its first look at a sixth of the epochs (rounded up) makes two brackets for any trial
# of 3 epochs or more: an eager one looking at a sixth and at a half, a patient one first at a half.
# (At a quarter, as successive halving looks, the patient bracket would look first at three quarters
# and the search would expect to spend 60% of every trial's epochs before any overhead; at a sixth, 47%.)
HYPERBAND_FIRST_LOOK = 6  # the epochs divided by this, rounded up
HYPERBAND_REDUCTION_FACTOR = 3
# NSGA-II (the two-sided objective) breeds each generation from the best of the ones before; its first
# is drawn at random. Optuna's population of 50 would leave a search of a few dozen trials all random:
# kdq sizes it so that a search sees about this many generations (at least 2, and at least `parallel`).
GENERATIONS = 4


def study_path(root: Path, name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return root / "search" / f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}.journal"


def storage(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def distributions(search: SearchSpec) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for key, value in search.space.items():
        if isinstance(value, Range):
            if is_int_field(key):
                out[key] = IntDistribution(int(value.low), int(value.high), log=value.log)
            else:
                out[key] = FloatDistribution(float(value.low), float(value.high), log=value.log)
        else:
            out[key] = CategoricalDistribution(value)
    return out


def directions(search: SearchSpec) -> list[str]:
    """F1 (or the expected score) up; for the two-sided objective, also the model file's MiB down."""
    return ["maximize", "minimize"] if search.two_sided else ["maximize"]


def population(search: SearchSpec) -> int:
    return min(50, max(2, search.parallel, search.trials // GENERATIONS))


def sampler(search: SearchSpec, offset: int = 0) -> optuna.samplers.BaseSampler:
    """TPE (NSGA-II for the two-sided objective) seeded by the search's seed and ``offset`` (how many
    trials exist): every worker start opens the study afresh, and one seed for all would draw the same
    first guesses again after each."""
    seed = (search.seed * 1_000_003 + offset) % 2**32
    if search.two_sided:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population(search))
    # multivariate: one joint density over the space, not one per parameter (lr and weight decay act
    # together); constant_liar: trials still running count as bad guesses, so parallel trials spread out.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=search.parallel > 1)


def ask(study: optuna.Study, search: SearchSpec) -> optuna.Trial:
    """The next trial, drawn by a sampler seeded for this point of the study (see ``sampler``)."""
    study.sampler = sampler(search, offset=len(study.get_trials(deepcopy=False)))
    return study.ask(distributions(search))


def complete(study: optuna.Study, frozen: optuna.trial.FrozenTrial, search: SearchSpec) -> bool:
    """Give a running trial every parameter of the space; ``True`` when some were missing.

    Optuna's ``ask`` writes the trial first, then each parameter: a worker killed in between leaves a
    running trial with some or none. The sampler draws the missing ones now (an enqueued trial gets its
    fixed values back), so the trial is trained as the study records it."""
    missing = {k: d for k, d in distributions(search).items() if k not in frozen.params}
    if not missing:
        return False
    # The seed of the ask that was cut short (its trial's number): the count of trials, as ``ask`` seeds,
    # would be the next trial's seed too, and both would draw the same guess.
    study.sampler = sampler(search, offset=frozen.number)
    trial = optuna.Trial(study, frozen._trial_id)
    for key, d in missing.items():
        if isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(key, d.choices)
        elif isinstance(d, IntDistribution):
            trial.suggest_int(key, d.low, d.high, log=d.log)
        else:
            trial.suggest_float(key, d.low, d.high, log=d.log)
    return True


def intermediate(progress: dict) -> float | None:
    """What a training trial reports at its latest epoch: the best validation F1 so far (``best_f1``;
    the trial ends with its best epoch's model, so an epoch that dips is not the trial), or that
    epoch's F1 from a run that does not say."""
    value = progress.get("best_f1")
    value = progress.get("val_f1") if value is None else value
    return None if value is None else float(value)


def prunable(progress: dict) -> bool:
    """Whether the pruner may still stop a trial: not at its last epoch. A trial that trained every
    epoch costs only its export now; stopping it would save nothing and throw its model away."""
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    return bool(epoch) and (epochs is None or epoch < epochs)


def first_look(epochs: int) -> int:
    """The epoch of the pruner's first look, for trials of ``epochs`` epochs (the fewest in the space)."""
    return max(1, int(epochs * FIRST_LOOK))


def hyperband_first_look(epochs: int) -> int:
    """The epoch of Hyperband's earliest look, for trials of ``epochs`` epochs (the fewest in the space)."""
    return max(1, -(-epochs // HYPERBAND_FIRST_LOOK))


def pruner(search: SearchSpec, epochs: int) -> optuna.pruners.BasePruner:
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "hyperband":  # max_resource fixed: "auto" would prune nothing until a trial completes
        return optuna.pruners.HyperbandPruner(
            min_resource=hyperband_first_look(epochs),
            max_resource=epochs,
            reduction_factor=HYPERBAND_REDUCTION_FACTOR,
        )
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=first_look(epochs), reduction_factor=REDUCTION_FACTOR
    )


def open_study(root: Path, search: SearchSpec, epochs: int) -> optuna.Study:
    """The search's study, created on first use (the worker's call); ``epochs``: see ``first_look``."""
    return optuna.create_study(
        study_name=search.name,
        storage=storage(study_path(root, search.name)),
        sampler=sampler(search),
        pruner=pruner(search, epochs),
        directions=directions(search),
        load_if_exists=True,
    )


def load_study(root: Path, name: str) -> optuna.Study | None:
    """The study for reading (``kdq search``); ``None`` before the worker has made it."""
    path = study_path(root, name)
    if not path.exists():
        return None
    return optuna.load_study(study_name=name, storage=storage(path))


def first_params(search: SearchSpec, n: int) -> list[dict[str, Any]]:
    """The first ``n`` trials' parameters, drawn by the search's own sampler in memory (at enqueue).

    The worker hands them to the stored study as enqueued trials, so the study stays the one record."""
    study = optuna.create_study(sampler=sampler(search), directions=directions(search))
    return [study.ask(distributions(search)).params for _ in range(n)]


def objective_value(objective: str, metrics: dict, expected: Any = None) -> float | list[float]:
    """What a validated trial scores: its holdout F1 (``val_f1`` for a run without a holdout), the
    expected leaderboard score computed by the course side (``expected``), or for the two-sided
    objective ``[F1, MiB]``: the F1 and the exported file's size that training measured (``model_mb``)."""
    if objective == "expected_score":
        if expected is None:
            raise ValueError("the expected score is not available for this model")
        return float(expected)
    value = metrics.get("holdout_f1")
    f1 = float(metrics["val_f1"] if value is None else value)
    return [f1, float(metrics["model_mb"])] if objective == TWO_SIDED else f1
