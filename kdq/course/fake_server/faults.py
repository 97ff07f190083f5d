"""Faults the stand-in server can be told to make: a queue of "the next N requests to ROUTE go wrong".

    error        answer ``status`` (500 by default; 502/503/504 come as a proxy's HTML page)
    rate_limit   answer 429 ``Rate limit: wait N minutes|seconds`` naming ``wait_s``
    garbage      answer ``body`` = html | empty | truncated (status 200 unless ``status`` is set)
    stall        wait ``seconds`` before answering normally

``when="after"`` lets the request do its work first (a submission is recorded) and then spoils the
answer: the case where a client cannot know whether its upload went through. ``when="read"`` (a
stall on submit) reads the whole upload, waits, and only then records it: a slow server, where a
client that timed out finds nothing on the status list for a while although its upload will count.

On the command line a fault is ``KIND[:COUNT][,key=value...]``, e.g. ``error:3,status=502``,
``rate_limit,wait_s=120,route=submit``, ``garbage:2,body=truncated``, ``stall,seconds=5,when=after``,
``stall,seconds=8,when=read,route=submit``.
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Route = Literal["any", "submit", "status", "leaderboard", "home"]


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["error", "rate_limit", "garbage", "stall"]
    count: int = Field(1, ge=1, description="How many requests it spoils.")
    route: Route = "any"
    when: Literal["before", "read", "after"] = "before"
    status: int | None = Field(None, ge=200, le=599, description="error: 500; garbage: 200.")
    wait_s: float = Field(60.0, ge=0, description="rate_limit: the wait named in the message.")
    unit: Literal["minutes", "seconds"] | None = Field(
        None, description="rate_limit: default minutes on submit."
    )
    body: Literal["html", "empty", "truncated"] = "html"
    seconds: float = Field(5.0, ge=0, description="stall: how long.")
    delay_s: float = Field(0.0, ge=0, description="error, rate_limit, garbage: wait this long first.")


def parse_fault(text: str) -> Fault:
    """``"error:3,status=502"`` → ``Fault``; ``ValueError`` naming the problem otherwise."""
    head, *pairs = [part.strip() for part in text.split(",")]
    kind, _, count = head.partition(":")
    raw: dict[str, object] = {"kind": kind}
    if count:
        raw["count"] = count
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"fault {text!r}: {pair!r} is not key=value")
        raw[key.strip()] = value.strip()
    try:
        return Fault.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'fault'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"fault {text!r}: {problems}. Example: error:3,status=502") from None


class FaultQueue:
    """Thread-safe: tests add faults from their thread while the server takes them in its own."""

    def __init__(self, faults: list[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._items: list[list] = [[f, f.count] for f in faults]

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._items.append([fault, fault.count])

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def take(self, route: str, when: str) -> Fault | None:
        with self._lock:
            for item in self._items:
                fault, left = item
                if left > 0 and fault.when == when and fault.route in ("any", route):
                    item[1] -= 1
                    if item[1] == 0:
                        self._items.remove(item)
                    return fault
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [{**f.model_dump(), "left": left} for f, left in self._items]
