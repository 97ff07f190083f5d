from datetime import UTC, datetime

import pytest

from kdq.course.models import Attempt, SubmitReceipt, as_number, classify, parse_attempt_number, parse_eastern


@pytest.mark.parametrize(
    "body, attempt, team",
    [
        (
            {
                "message": "Submission received for team 'NAME'. Attempt #5.",
                "status": "pending",
                "attempt": 5,
            },
            5,
            "NAME",
        ),
        (
            {
                "message": "Submission received for team 'My Team'. This is attempt #1, status pending, "
                "evaluation pending."
            },
            1,
            "My Team",
        ),
        ({"message": "ATTEMPT # 12 queued"}, 12, None),
        ({"message": "Attempt #3.", "attempt": "7"}, 7, None),  # the field wins over the text
        ({"message": "received"}, None, None),
    ],
)
def test_receipt_reads_both_wordings(body, attempt, team):
    receipt = SubmitReceipt.from_raw(body)
    assert receipt.attempt == attempt
    assert receipt.team == team
    assert receipt.message == body["message"]


def test_attempt_number_from_field_or_text():
    assert parse_attempt_number("This is attempt #42, status pending") == 42
    assert parse_attempt_number(None, 3) == 3
    assert parse_attempt_number("nothing here", "n/a") is None


def test_eastern_time_to_utc_in_winter_and_summer():
    assert parse_eastern("Nov 12, 2025 10:46:41 AM") == datetime(2025, 11, 12, 15, 46, 41, tzinfo=UTC)
    assert parse_eastern("Jul 4, 2025 11:00:00 PM") == datetime(2025, 7, 5, 3, 0, 0, tzinfo=UTC)
    assert parse_eastern("  Nov  02, 2025 01:05:09 PM ") == datetime(2025, 11, 2, 18, 5, 9, tzinfo=UTC)
    assert parse_eastern("") is None
    assert parse_eastern("yesterday") is None
    assert parse_eastern(None) is None


def test_numbers_tolerate_strings_and_placeholders():
    assert as_number(7.25) == 7.25
    assert as_number("7.25") == 7.25
    assert as_number(" 4.6 ") == 4.6
    for missing in (None, "N/A", "", "pending", float("nan"), True, [1]):
        assert as_number(missing) is None


def test_status_text_kept_verbatim_and_classified():
    assert classify("pending") == "pending"
    assert classify("Successful") == "successful"
    assert classify("broken file") == "failed"
    assert classify("rejected (file too large)") == "failed"
    assert classify("Evaluation failed: RuntimeError: boom") == "failed"


def test_attempt_from_loose_object():
    a = Attempt.from_raw(
        {
            "attempt": 2,
            "status": "pending",
            "model_size": "4.61",
            "score": "N/A",
            "submitted_at": "Nov 12, 2025 10:46:41 AM",
        },
        position=9,
    )
    assert (a.attempt, a.status, a.size_mb, a.score, a.state) == (2, "pending", 4.61, None, "pending")
    assert a.submitted_at == datetime(2025, 11, 12, 15, 46, 41, tzinfo=UTC)
    bare = Attempt.from_raw({"status": "broken file"}, position=3)
    assert (bare.attempt, bare.size_mb, bare.submitted_at, bare.terminal) == (3, None, None, True)
