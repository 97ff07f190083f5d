"""What a user may ask of an experiment (``kdq cancel``, ``kdq retry``, ``kdq submit``), as store methods.

Each reads the experiment, checks the request against its stage, and changes it compare-and-set, so
a request that loses a race with the worker says so instead of undoing the worker's move.
"""

from __future__ import annotations

import time

from kdq.experiment import Experiment
from kdq.stages import LIVE, RETRYABLE, Stage

# Stages with nothing running elsewhere: a cancel there is immediate.
CANCEL_AT_ONCE = (Stage.QUEUED, Stage.READY, Stage.FETCHING, Stage.VALIDATING)
SUBMITTABLE = (Stage.READY, Stage.DONE, Stage.SKIPPED)


class UserRequests:
    """Mixed into ``kdq.store.Store``: uses its ``get``, ``move``, ``update``, ``event``, ``transaction``."""

    def request_cancel(self, exp_id: int) -> Experiment:
        """Flag for the worker; stages with nothing running elsewhere are cancelled at once."""
        exp = self.get(exp_id)
        if exp.stage in CANCEL_AT_ONCE and self.move(
            exp_id, exp.stage, Stage.CANCELLED, "cancelled by the user"
        ):
            return self.get(exp_id)
        # Flag it only while it is still live: the worker may have finished or failed it since the read.
        live = sorted(str(s) for s in LIVE)
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "update experiments set cancel_requested = 1, updated_at = ? "
                f"where id = ? and stage in ({','.join('?' * len(live))})",
                [now, exp_id, *live],
            )
            if cur.rowcount == 1:
                db["events"].insert(
                    {
                        "exp_id": exp_id,
                        "ts": now,
                        "kind": "cancel",
                        "stage": None,
                        "message": "cancel requested",
                    }
                )
        return self.get(exp_id)

    def retry(self, exp_id: int, fresh: bool = False) -> Experiment:
        """Queue a failed, cancelled or skipped experiment again as a new attempt (a new run id). It
        starts from the last run's last checkpoint (the training checks the spec is the same) unless
        ``fresh``."""
        exp = self.get(exp_id)
        if exp.stage not in RETRYABLE:
            raise ValueError(
                f"experiment {exp_id} is {exp.stage}; only {', '.join(sorted(RETRYABLE))} can be retried"
            )
        resume = None if fresh else exp.run_id or exp.resume_from
        how = f", from run {resume}'s last checkpoint" if resume else ", from epoch 1"
        moved = self.move(
            exp_id,
            exp.stage,
            Stage.QUEUED,
            f"retry (attempt {exp.attempt + 1}{how})",
            attempt=exp.attempt + 1,
            resume_from=resume,
            run_id=None,
            handle=None,
            progress=None,
            error=None,
            cancel_requested=0,
            next_check_at=time.time(),
        )
        if not moved:
            raise ValueError(f"experiment {exp_id} changed while retrying; look again")
        return self.get(exp_id)

    def request_submit(self, exp_id: int) -> Experiment:
        """``kdq submit ID``: submit this validated model next, whatever its policy (not the rate limit)."""
        exp = self.get(exp_id)
        if exp.stage not in SUBMITTABLE or not exp.artifacts:
            raise ValueError(
                f"experiment {exp_id} is {exp.stage}; "
                "only a validated model (ready, done or skipped) can be submitted"
            )
        if exp.stage is not Stage.READY and not self.move(
            exp_id, exp.stage, Stage.READY, "submission requested"
        ):
            raise ValueError(f"experiment {exp_id} changed while requesting a submission; look again")
        self.update(exp_id, submit_requested=1, next_check_at=time.time())
        self.event(exp_id, "submit", "submission requested by the user")
        return self.get(exp_id)
