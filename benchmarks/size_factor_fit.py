"""How well the size factor is recovered from a leaderboard: random boards whose scores hide the previous
homework's term (1 point, size normalised between 1 and 23 MiB), printed as the page prints them
(score 3 decimals, F1 4, size 2), fitted by kdq.course.size_factor.fit with the default prior.

    .venv/bin/python benchmarks/size_factor_fit.py      # worst |fit - truth| at 2, 10 and 20 MiB
"""

import numpy as np

from kdq.course.models import LeaderboardRow
from kdq.course.size_factor import fit


def capped(size: float) -> float:
    return (min(max(size, 1.0), 23.0) - 1.0) / 22.0


def main(boards: int = 20) -> None:
    for teams in (30, 10, 6):
        errors = []
        for seed in range(boards):
            rng = np.random.default_rng(seed)
            sizes, f1s = rng.uniform(0.8, 24.0, teams), rng.uniform(0.4, 0.9, teams)
            rows = [
                LeaderboardRow(
                    team=str(i), f1=round(f, 4), score=round(10 * f - capped(s), 3), size_mb=round(s, 2)
                )
                for i, (s, f) in enumerate(zip(sizes, f1s))
            ]
            factor = fit(rows)
            errors.append(max(abs(factor(x) - capped(x)) for x in (2.0, 10.0, 20.0)))
        print(
            f"{teams} teams: worst |fit - truth| at 2/10/20 MiB over {boards} boards: "
            f"max {max(errors):.4f}, median {np.median(errors):.4f} points"
        )


if __name__ == "__main__":
    main()
