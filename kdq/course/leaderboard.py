"""Read the leaderboard page: an HTML table whose columns are found by their header text.

The Homework 3 columns are not known in advance, so nothing here depends on their order or number:
the header row names them, ``rank``/``team``/``f1``/``score``/``size`` are matched by words in those
names, extra columns are kept in ``cells``, and ``N/A``, blanks and stray whitespace read as missing.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from kdq.course.errors import UnexpectedResponse
from kdq.course.models import Leaderboard, LeaderboardRow, as_int, as_number
from kdq.log import get_logger

log = get_logger("kdq.course")


class _Tables(HTMLParser):
    """Every table as a list of rows, each row a list of (is_header, text) cells."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[tuple[bool, str]]]] = []
        self._stack: list[list[list[tuple[bool, str]]]] = []
        self._cell: list[str] | None = None
        self._cell_is_header = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "table":
            self._stack.append([])
        elif not self._stack:
            return
        elif tag == "tr":
            self._close_cell()
            self._stack[-1].append([])
        elif tag in ("td", "th"):
            self._close_cell()
            if not self._stack[-1]:
                self._stack[-1].append([])
            self._cell, self._cell_is_header = [], tag == "th"
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if not self._stack:
            return
        if tag in ("td", "th", "tr"):
            self._close_cell()
        elif tag == "table":
            self._close_cell()
            self.tables.append(self._stack.pop())

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def _close_cell(self) -> None:
        if self._cell is not None and self._stack and self._stack[-1]:
            self._stack[-1][-1].append((self._cell_is_header, " ".join("".join(self._cell).split())))
        self._cell = None

    def close(self) -> None:
        super().close()
        while self._stack:  # an unclosed table (truncated page) still counts
            self._close_cell()
            self.tables.append(self._stack.pop())


def _words(header: str) -> set[str]:
    """Words of a header, parentheses left out: "Score (10*F1 - size)" is a score, not an F1."""
    bare = re.sub(r"\([^)]*\)|\[[^]]*\]", " ", header).strip() or header
    return set(re.findall(r"[a-z0-9]+", bare.lower()))


def find_columns(headers: list[str]) -> dict[str, int]:
    """Which column holds rank, team, f1, score and size (only those found)."""
    found: dict[str, int] = {}
    for i, header in enumerate(headers):
        words = _words(header)
        if "rank" in words or header.strip() in ("#", "No.", "Pos", "Position", "Place"):
            found.setdefault("rank", i)
        elif "team" in words or words == {"name"} or "group" in words:
            found.setdefault("team", i)
        elif "f1" in words or "macro" in words:
            found.setdefault("f1", i)
        elif "score" in words or "points" in words:
            found.setdefault("score", i)
        elif "size" in words or "mb" in words or "mib" in words:
            found.setdefault("size", i)
    return found


def parse_leaderboard(html: str) -> Leaderboard:
    """The first table with a team column, read into rows; ``UnexpectedResponse`` if there is none."""
    parser = _Tables()
    parser.feed(html)
    parser.close()
    for table in parser.tables:
        rows = [row for row in table if row]
        if not rows:
            continue
        header_at = next((i for i, row in enumerate(rows) if all(h for h, _ in row)), 0)
        headers = [text for _, text in rows[header_at]]
        cols = find_columns(headers)
        if "team" not in cols:
            continue
        out: list[LeaderboardRow] = []
        for row in rows[header_at + 1 :]:
            texts = [text for _, text in row]
            if len(texts) <= cols["team"] or not texts[cols["team"]]:
                continue
            cell = _cells(texts, cols)
            out.append(
                LeaderboardRow(
                    rank=as_int(_first_number(cell("rank"))) if "rank" in cols else len(out) + 1,
                    team=cell("team") or "",
                    score=as_number(cell("score")),
                    f1=as_number(cell("f1")),
                    size_mb=as_number(_first_number(cell("size"))),
                    cells={h or f"column {i + 1}": texts[i] for i, h in enumerate(headers) if i < len(texts)},
                )
            )
        return Leaderboard(columns=headers, rows=out)
    snippet = " ".join(html.split())[:120]
    raise UnexpectedResponse(f"leaderboard page has no table with a team column (page starts: {snippet!r})")


def _cells(texts: list[str], cols: dict[str, int]):
    """``cell(name)``: the text of that column in this row, or ``None``."""

    def cell(name: str) -> str | None:
        i = cols.get(name)
        return texts[i] if i is not None and i < len(texts) else None

    return cell


def _first_number(text: str | None) -> str | None:
    """``"4.61 MB"`` → ``"4.61"``; text without a number stays as it is (and reads as missing)."""
    if text is None:
        return None
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    return match.group(0) if match else text


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None


def find_leaderboard_link(html: str, base_url: str) -> str | None:
    """The path of the page's leaderboard link on the same server; Homework 3's preferred over others."""
    parser = _Links()
    parser.feed(html)
    host = urlsplit(base_url).netloc
    found = []
    for href, text in parser.links:
        url = urlsplit(urljoin(base_url + "/", href))
        if url.netloc == host and "leaderboard" in (url.path + " " + text).lower():
            found.append((("3" not in url.path + text), url.path + (f"?{url.query}" if url.query else "")))
    return min(found)[1] if found else None


def rediscover(http, base_url: str, current: str, pages: tuple[str, ...]) -> str | None:
    """A leaderboard path that moved: the link to it on the course pages, as a person would find it."""
    import httpx

    for page in pages:
        try:
            response = http.get(base_url + page, timeout=http.timeout)
        except httpx.HTTPError:
            continue
        if response.status_code != 200:
            continue
        found = find_leaderboard_link(response.text, base_url)
        if found and found != current:
            log.warning(
                "course.leaderboard_moved",
                old=current,
                new=found,
                found_on=page,
                fix=f"set KDQ_LEADERBOARD_PATH={found}",
            )
            return found
    return None
