import pytest

from kdq.course.errors import UnexpectedResponse
from kdq.course.leaderboard import find_columns, parse_leaderboard

REORDERED = """
<html><body><h1>Leaderboard</h1>
<table class="x">
  <tr><th> Model Size (MB) </th><th>Team Name</th><th>Submitted</th><th>Macro F1</th><th>#</th>
      <th>Score (10*F1 - size)</th></tr>
  <tr><td>4.61 MB</td><td>  Team   Rocket </td><td>Nov 12</td><td>0.8123</td><td>1</td><td>8.07</td></tr>
  <tr><td>N/A</td><td>Other &amp; Co</td><td></td><td>N/A</td><td>2</td><td>  7.5 </td></tr>
  <tr><td>1.0</td><td></td><td></td><td>0.1</td><td>3</td><td>1</td></tr>
</table></body></html>
"""


def test_columns_found_by_header_words_in_any_order():
    board = parse_leaderboard(REORDERED)
    assert [r.team for r in board.rows] == ["Team Rocket", "Other & Co"]  # a row without a team is skipped
    rocket, other = board.rows
    assert (rocket.rank, rocket.score, rocket.f1, rocket.size_mb) == (1, 8.07, 0.8123, 4.61)
    assert (other.rank, other.score, other.f1, other.size_mb) == (2, 7.5, None, None)
    assert rocket.cells["Submitted"] == "Nov 12"
    assert board.find(" team rocket ") is rocket
    assert board.find("nobody") is None


def test_first_table_with_a_team_column_wins_and_rank_defaults_to_position():
    page = """<table><tr><td>menu</td></tr></table>
    <table><thead><tr><th>Team</th><th>F1 Score</th></tr></thead>
    <tbody><tr><td>a</td><td>0.5</td></tr><tr><td>b</td><td>0.4</td></tr></tbody></table>"""
    board = parse_leaderboard(page)
    assert [(r.rank, r.team, r.f1, r.score) for r in board.rows] == [(1, "a", 0.5, None), (2, "b", 0.4, None)]


def test_header_row_of_td_cells_and_unclosed_tags():
    page = "<table><tr><td>Rank<td>Team<td>Score<td>Size<tr><td>1st<td>z<td>9.1<td>3.2"
    board = parse_leaderboard(page)
    assert [(r.rank, r.team, r.score, r.size_mb) for r in board.rows] == [(1, "z", 9.1, 3.2)]


def test_find_columns():
    assert find_columns(["Rank", "Team", "Score", "F1", "Size (MB)", "Extra"]) == {
        "rank": 0,
        "team": 1,
        "score": 2,
        "f1": 3,
        "size": 4,
    }


@pytest.mark.parametrize(
    "page",
    ["", "<html><body>Service unavailable</body></html>", "<table><tr><th>a</th><th>b</th></tr></table>"],
)
def test_a_page_without_a_leaderboard_is_an_unexpected_response(page):
    with pytest.raises(UnexpectedResponse, match="no table with a team column"):
        parse_leaderboard(page)
