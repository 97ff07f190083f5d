"""Search against grid: epochs spent and the best holdout F1 found, side by side, in one run.

    .venv/bin/python -W ignore benchmarks/search.py                 # defaults: small enough for 2 cores
    .venv/bin/python -W ignore benchmarks/search.py --per-class 80 --epochs 12 --json out.json
    .venv/bin/python -W ignore benchmarks/search.py --pruner successive_halving   # another pruner

On one seeded generated dataset, with the tiny student on 32-pixel pictures:

- **grid**: the 24 points of lr (6, log-spaced) x weight_decay (2) x label_smoothing (2), each trained
  to the end;
- **search**: 24 trials over the same ranges, drawn by kdq's own study (``kdq.search.study``: TPE, the
  default pruner or ``--pruner`` on each epoch's validation F1, the same distributions), the first
  trial queued up front as ``kdq enqueue`` does. A pruned trial stops at the epoch the pruner says.

Both use the real training loop (``kdq.train.loop.run``) in this process, one trial at a time, and each
picks its best by the untouched holdout's F1. Target (issue 17): the search spends <= 60% of the grid's
epochs for a best within 0.01 of the grid's.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import get_args

from kdq.search.space import SearchSpec

ROOT = Path(__file__).resolve().parents[1]
PRUNERS = get_args(SearchSpec.model_fields["pruner"].annotation)
DEFAULT_PRUNER = SearchSpec.model_fields["pruner"].default


def base(epochs: int, extra: str = "") -> str:
    """The spec both sides train: the tests' tiny spec (tests/spectext.py) on the CPU, with a holdout."""
    sys.path.insert(0, str(ROOT / "tests"))
    from spectext import tiny_spec

    holdout = "val_fraction = 0.2\nholdout_fraction = 0.25"
    return tiny_spec("bench", epochs=epochs, train_extra='device = "cpu"', data_extra=holdout, extra=extra)


LR = (3e-4, 1e-1)
WEIGHT_DECAY = (0.0, 0.1)
LABEL_SMOOTHING = (0.0, 0.1)
SEARCH = """
[search]
trials = 24
parallel = 1
objective = "holdout_f1"
pruner = "{pruner}"
seed = {seed}
[search.space]
"train.lr" = {{ low = 3e-4, high = 1e-1, log = true }}
"train.weight_decay" = {{ low = 0.0, high = 0.1 }}
"distill.label_smoothing" = {{ low = 0.0, high = 0.1 }}
"""


class Pruned(Exception):
    pass


def train(spec, work: Path, data: Path, cache: Path, on_epoch=None) -> tuple[int, float | None]:
    """(epochs run, holdout F1 or None when pruned)."""
    from kdq import runfolder
    from kdq.train.loop import run

    run_dir = work / f"run-{time.perf_counter_ns()}"
    try:
        run(spec, run_dir, data, cache, on_epoch=(lambda e: on_epoch(run_dir, e)) if on_epoch else None)
    except Pruned as stop:
        return int(stop.args[0]), None
    metrics = runfolder.read_json(run_dir / runfolder.METRICS)
    return int(metrics["epochs_run"]), float(metrics["holdout_f1"])


def grid(epochs: int, work: Path, data: Path, cache: Path) -> dict:
    from kdq.specfile import expand

    lrs = [math.exp(math.log(LR[0]) + i * (math.log(LR[1]) - math.log(LR[0])) / 5) for i in range(6)]
    spent, best, points = 0, None, 0
    for lr, wd, ls in itertools.product(lrs, WEIGHT_DECAY, LABEL_SMOOTHING):
        raw = tomllib.loads(base(epochs))
        raw["train"].update(lr=lr, weight_decay=wd)
        raw["distill"]["label_smoothing"] = ls
        [spec] = expand(raw, "grid.toml")
        n, f1 = train(spec, work, data, cache)
        spent, points = spent + n, points + 1
        if best is None or f1 > best[0]:
            best = (f1, {"train.lr": lr, "train.weight_decay": wd, "distill.label_smoothing": ls})
    return {"trials": points, "epochs": spent, "best_holdout_f1": best[0], "best_params": best[1]}


def search(epochs: int, seed: int, pruner: str, work: Path, data: Path, cache: Path) -> dict:
    import optuna
    from optuna.trial import TrialState

    from kdq import runfolder
    from kdq.search import study as studies
    from kdq.search.spec import document, fewest_epochs, params_of, trial_spec
    from kdq.specfile import expand

    first = expand(tomllib.loads(base(epochs, SEARCH.format(seed=seed, pruner=pruner))), "search.toml")
    s = first[0].search
    study = studies.open_study(work, s, fewest_epochs(first[0]))
    for spec in first:  # the trials `kdq enqueue` queued, handed to the study as the worker does
        study.enqueue_trial(params_of(spec))
    spent, pruned = 0, 0
    for _ in range(s.trials):
        trial = studies.ask(study, s)  # as the worker asks
        spec = trial_spec(document(first[0]), trial.params, trial.number)

        def report(run_dir: Path, epoch: int, trial: optuna.Trial = trial) -> None:
            progress = runfolder.read_json(run_dir / runfolder.PROGRESS)
            trial.report(studies.intermediate(progress), epoch + 1)  # as the worker reports
            if studies.prunable(progress) and trial.should_prune():
                raise Pruned(epoch + 1)

        n, f1 = train(spec, work, data, cache, on_epoch=report)
        spent += n
        if f1 is None:
            pruned += 1
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, f1)
    best = study.best_trial
    return {
        "trials": s.trials,
        "pruned": pruned,
        "epochs": spent,
        "best_holdout_f1": best.value,
        "best_params": best.params,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100, help="generated pictures per class")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0, help="data and sampler seed")
    ap.add_argument("--pruner", choices=PRUNERS, default=DEFAULT_PRUNER, help="the search's pruner")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import torch

    from kdq.synth import synth

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kdq-bench-search-") as tmp:
        work = Path(tmp)
        data, cache = work / "synth", work / "cache"
        synth(data, per_class=args.per_class, seed=args.seed)
        t = time.perf_counter()
        g = grid(args.epochs, work, data, cache)
        g["seconds"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        s = search(args.epochs, args.seed, args.pruner, work, data, cache)
        s["seconds"] = round(time.perf_counter() - t, 1)
    ratio = s["epochs"] / g["epochs"]
    gap = g["best_holdout_f1"] - s["best_holdout_f1"]
    print(f"{'':26}{'grid':>12}{'search':>12}")
    print(f"{'trials':26}{g['trials']:>12}{s['trials']:>12}   ({s['pruned']} pruned by {args.pruner})")
    print(f"{'epochs spent':26}{g['epochs']:>12}{s['epochs']:>12}   search/grid {ratio:.2f} (target <= 0.60)")
    print(
        f"{'best holdout F1':26}{g['best_holdout_f1']:>12.4f}{s['best_holdout_f1']:>12.4f}"
        f"   grid - search {gap:+.4f} (target <= 0.01)"
    )
    print(f"{'seconds':26}{g['seconds']:>12}{s['seconds']:>12}")
    print(f"grid best:   {g['best_params']}\nsearch best: {s['best_params']}")
    met = ratio <= 0.60 and gap <= 0.01
    print("target met" if met else "target NOT met")
    result = {"grid": g, "search": s, "epochs_ratio": ratio, "best_gap": gap, "target_met": met, **vars(args)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
