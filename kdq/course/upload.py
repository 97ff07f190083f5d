"""One upload, from the intent written before the POST to an attempt number (or back to ``ready``).

Every upload replaces the live submission and spends a window, so none is ever sent twice:
- the intent (experiment, the sealed file's sha256 and size, the time) is in the ledger before the POST;
- an answer that may have been lost (timeout, 5xx, a crash) leaves the upload *unknown*: the status
  list is read until an attempt of our size recorded after the intent shows up (adopted as ours), or
  until one full submission interval plus a grace has passed with the server answering (then it was
  not sent, and it goes back to ``ready``). While it is unknown nothing else is uploaded;
- only the read-only copy with the hash recorded at validation is sent (``kdq.course.sealed``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kdq import runfolder
from kdq.course import matching
from kdq.course.errors import CourseError, RateLimited, Rejected, Unreachable
from kdq.course.ledger import Ledger
from kdq.course.models import Attempt
from kdq.course.sealed import Changed, seal
from kdq.course.server_view import ServerView, Wait
from kdq.experiment import Experiment
from kdq.log import get_logger
from kdq.stages import Stage
from kdq.store import Store

log = get_logger("kdq.course.scheduler")


class Uploader:
    def __init__(
        self, store: Store, ledger: Ledger, view: ServerView, settings, *, interval_s: float
    ) -> None:
        self.store, self.ledger, self.view, self.settings = store, ledger, view, settings
        self.interval_s = interval_s
        self.tol_s = matching.tolerance_s(interval_s)

    @property
    def grace_s(self) -> float:
        """After the interval, how long an unknown upload may still appear: a server that read an upload
        may record it late (it held ours past our read timeout). Another interval and twice the read
        timeout: a re-upload after that is refused by the server's own rate limit if the first one
        is recorded later still (unless it held it for over two intervals)."""
        timeout = getattr(self.view.client, "request_timeout_s", None) or self.settings.request_timeout_s
        return self.interval_s + 2 * timeout

    # ---------------------------------------------------------------- settle the upload in flight

    def settle(self) -> None:
        """Settle an open intent, or raise ``Wait`` while its outcome is unknown."""
        intent = self.ledger.intent()
        if intent is None:  # SUBMITTING without an intent: only by hand; assume the worst (it may have gone)
            exp = self.store.list({Stage.SUBMITTING})[0]
            intent = {
                "exp_id": exp.id,
                "sub_id": None,
                "baseline": self.ledger.max_attempt(),
                "at": exp.updated_at,
            }
        exp = self.store.get(intent["exp_id"])
        if exp.stage is not Stage.SUBMITTING:  # the POST never happened, or its outcome is already recorded
            if exp.stage is Stage.READY:
                self.ledger.update_submission(
                    intent.get("sub_id"), state="not_sent", message="stopped before the upload"
                )
            self.ledger.clear_intent()
            return
        left_s = self.interval_s + self.grace_s - self.ledger.elapsed(intent)
        settled = left_s <= 0
        deadline = self.ledger.clock() + left_s  # the same instant on the wall clock, as of now
        attempts = self.view.attempts(newer_than=deadline if settled else intent["at"])
        size = intent["size"] if "size" in intent else file_bytes(Path(exp.artifacts or "") / runfolder.MODEL)
        found = matching.find_upload(
            attempts,
            since=intent["at"],
            size_bytes=size,
            baseline=intent["baseline"],
            tol_s=self.tol_s,
            restarted=self.ledger.restarted_since(intent["at"]),
            outside=self.ledger.outside_since(intent["at"] - self.interval_s),
        )
        if len(found) == 1:
            [ours] = found
            at = ours.submitted_at.timestamp() if ours.submitted_at else intent["at"]
            note = "the answer was lost, but the status list shows it went through"
            self.accepted(exp, intent, ours.attempt, "reconciled with the status list", at, note, ours)
            return
        sub_id = intent.get("sub_id")
        until = time.strftime("%H:%M:%S", time.localtime(deadline))
        if found:  # ours and someone else's, of one size: adopting either could record a wrong grade
            which = " and ".join(f"#{a.attempt}" for a in found)
            why = f"attempts {which} could each be this upload (same size); kdq cannot tell which"
            if not settled:
                self.ledger.update_submission(
                    sub_id, state="unknown", message=f"{why}; looking until {until}"
                )
                raise Wait(self.view.status_wait(), "an upload whose outcome is unknown")
            return self._unknown_for_good(exp, sub_id, why)
        if not settled:  # unknown: it may still appear; nothing else is uploaded meanwhile
            self.ledger.update_submission(
                sub_id, state="unknown", message=f"not listed yet; looking until {until}"
            )
            raise Wait(self.view.status_wait(), "an upload whose outcome is unknown")
        why = "the upload did not reach the server (not on the status list a full window later)"
        self._put_back(exp, sub_id, "not_sent", why, 0.0, "it will be submitted at the next free window")

    def _unknown_for_good(self, exp: Experiment, sub_id: int | None, why: str) -> None:
        """It may be on the server: never sent again, no grade recorded; the user can look and decide."""
        message = (
            f"outcome unknown: {why}. It is not uploaded again and no grade is recorded; "
            "`kdq server status` shows what the server has"
        )
        log.warning("course.upload_unknown", exp=exp.id, why=why)
        self.ledger.update_submission(sub_id, state="unknown", message=message[:500])
        self.store.move(exp.id, Stage.SUBMITTING, Stage.DONE, message[:500], submit_requested=0)
        self.ledger.clear_intent()

    # ---------------------------------------------------------------- the POST

    def submit(self, exp: Experiment, attempts: list[Attempt]) -> float:
        model = Path(exp.artifacts or "") / runfolder.MODEL
        try:
            path, sha = seal(model, (exp.metrics or {}).get("sha256"), self.settings.root / "uploads")
        except Changed as exc:
            self.store.move(exp.id, Stage.READY, Stage.FAILED, str(exc)[:500], error=str(exc))
            return 0.0
        except FileNotFoundError:
            path, sha = model, None  # the client's own check says so, in its words
        now = self.ledger.clock()
        baseline = max((a.attempt for a in attempts), default=0)
        sub_id = self.ledger.open_submission(exp.id, sha256=sha)
        # The intent is on disk before the POST, so a crash at any point after can be reconciled.
        intent = {"exp_id": exp.id, "sub_id": sub_id, "baseline": baseline, "at": now, "sha256": sha}
        intent["size"] = file_bytes(path)
        self.ledger.set_intent(intent)
        moved = self.store.move(
            exp.id, Stage.READY, Stage.SUBMITTING, f"submitting {model.name} (after attempt #{baseline})"
        )
        if not moved:  # it changed since the plan (a cancel, a second tick): nothing is sent
            self.ledger.update_submission(
                sub_id, state="abandoned", message="the experiment changed before the upload"
            )
            self.ledger.clear_intent()
            if self.store.get(exp.id).cancel_requested:  # a cancel that came as it was put back
                self.store.move(exp.id, Stage.READY, Stage.CANCELLED, "cancelled by the user (not submitted)")
            return 0.0
        log.info("course.submitting", exp=exp.id, file=str(path), sha256=sha, baseline=baseline)
        try:
            receipt = self.view.client.submit(path)
        except RateLimited as exc:
            self.ledger.block_until(now + exc.wait_s)
            return self._put_back(exp, sub_id, "rate_limited", f"rate limited: {exc}", exc.wait_s + 1)
        except CourseError as exc:
            return self._failed(exp, sub_id, exc)
        self.ledger.note_submit(now)
        if (
            receipt.attempt is None
        ):  # accepted, but the number is not in the answer: the status list will tell
            self.ledger.update_submission(sub_id, state="unknown", message=receipt.message)
            return self.view.status_wait()
        self.accepted(exp, intent, receipt.attempt, receipt.message, now)
        return self.view.status_wait()

    def _failed(self, exp: Experiment, sub_id: int, exc: CourseError) -> float:
        if isinstance(exc, Unreachable) and not exc.maybe_sent:
            failures = self.ledger.record_server(False, str(exc))
            return self._put_back(exp, sub_id, "not_sent", str(exc), self.view.backoff(failures))
        if isinstance(exc, Rejected):
            if exc.status_code in (401, 403) or "KDQ_TOKEN" in str(exc):  # our settings, not the model
                self.ledger.record_server(
                    True, f"submit refused: {exc}; fix KDQ_TOKEN and restart the worker"
                )
                return self._put_back(exp, sub_id, "refused", str(exc), self.view.max_retry_s)
            who = "the course server refused the upload" if exc.status_code else "not uploaded"
            self.ledger.update_submission(sub_id, state="rejected", server_status=exc.reason)
            message = f"{who}: {exc.reason}"
            self.store.move(exp.id, Stage.SUBMITTING, Stage.FAILED, message[:500], error=message)
            self.ledger.clear_intent()
            return 0.0
        # The upload may have gone through: keep the intent, the next tick reads the status list.
        self.ledger.record_server(not isinstance(exc, Unreachable), str(exc))
        self.ledger.update_submission(sub_id, state="unknown", message=str(exc))
        self.store.event(exp.id, "submission", f"outcome unknown ({exc}); checking the status list next")
        return self.view.status_wait()

    # ---------------------------------------------------------------- bookkeeping

    def _put_back(
        self, exp: Experiment, sub_id: int | None, state: str, message: str, delay: float, then: str = ""
    ) -> float:
        """Certainly not sent: back to ``ready``, or ``cancelled`` if the user asked meanwhile."""
        self.ledger.update_submission(sub_id, state=state, message=message)
        if self.store.get(exp.id).cancel_requested:
            why = f"cancelled by the user (not submitted: {message})"
            self.store.move(exp.id, Stage.SUBMITTING, Stage.CANCELLED, why[:500])
        else:
            why = f"not submitted: {message}" + (f"; {then}" if then else "")
            self.store.move(exp.id, Stage.SUBMITTING, Stage.READY, why[:500])
        self.ledger.clear_intent()
        return delay

    def accepted(
        self,
        exp: Experiment,
        intent: dict,
        attempt: int,
        message: str,
        at: float,
        note: str = "",
        recorded: Attempt | None = None,
    ) -> None:
        at = max(at, intent.get("at", at))  # never before our POST (a server clock behind ours)
        fields: dict[str, Any] = {
            "state": "evaluating",
            "attempt": attempt,
            "posted_at": at,
            "message": message,
        }
        if recorded is not None and recorded.submitted_at is not None:
            fields["recorded_at"] = recorded.submitted_at.timestamp()
        sub_id = intent.get("sub_id") or (self.ledger.latest_submission(exp.id) or {}).get("id")
        self.ledger.update_submission(sub_id, **fields)
        self.store.move(
            exp.id,
            Stage.SUBMITTING,
            Stage.EVALUATING,
            f"submitted: attempt #{attempt}" + (f" ({note})" if note else ""),
            server_attempt=attempt,
            submit_requested=0,
        )
        self.ledger.note_submit(at)
        self.ledger.clear_intent()
        log.info("course.accepted", exp=exp.id, attempt=attempt)


def file_bytes(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
