"""What the GPUs cost: GPU-hours and dollars per experiment, for the night, and the worst case still to come.

    prices = parse_prices("H100:4.10")                # KDQ_GPU_PRICE_PER_HOUR, over the defaults
    spans = attempts(stage_events)                    # [(start, end or None)] of each training attempt
    hours = gpu_hours(spans, now)
    Cost.of(backend, gpu, hours, prices, caps)        # dollars spent, and the most still possible

An attempt runs from its ``launching`` event to the next stage that leaves training behind (fetching,
failed, cancelled, pruned, queued): that is the time a Modal container can hold its GPU. A local
attempt costs nothing (the laptop's own GPU or CPU) but its hours are counted. The worst case is what
the caps still allow: ``backend.max_gpu_min`` less what the experiment already used, or two
attempts of ``backend.timeout_min`` (Modal retries an attempt once), whichever is less. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Modal's list prices, US dollars per GPU-hour (modal.com/pricing, per-second billing x 3600).
DEFAULT_PRICES: dict[str, float] = {
    "T4": 0.59,
    "L4": 0.80,
    "A10G": 1.10,
    "L40S": 1.95,
    "A100": 2.10,
    "A100-40GB": 2.10,
    "A100-80GB": 2.50,
    "H100": 3.95,
    "H200": 4.54,
    "B200": 6.25,
}
MODAL_ATTEMPTS = 2  # one attempt and Modal's retry (jobs/modal_app.py: RETRIES)
ATTEMPT_ENDS = frozenset(
    {"fetching", "validating", "failed", "cancelled", "pruned", "queued", "ready", "done"}
)


def parse_prices(text: str | None) -> dict[str, float]:
    """``KDQ_GPU_PRICE_PER_HOUR``: ``"3.2"`` (every GPU type) or ``"H100:4.1,A100-80GB:2.6"`` pairs, over
    the defaults. ``ValueError`` saying what is wrong and giving an example."""
    prices = dict(DEFAULT_PRICES)
    text = (text or "").replace(" ", "")
    if not text:
        return prices
    try:
        if ":" not in text:
            value = float(text)
            return {**{gpu: value for gpu in prices}, "*": value}
        for part in text.split(","):
            gpu, _, value = part.partition(":")
            if not gpu:
                raise ValueError
            prices[gpu.upper()] = float(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not dollars per GPU-hour; write one number (3.95) or GPU:price pairs, "
            "e.g. 'H100:3.95,A100-80GB:2.50'"
        ) from None
    if any(v < 0 for v in prices.values()):
        raise ValueError(f"{text!r}: a price cannot be negative")
    return prices


def price_per_hour(backend: str, gpu: str, prices: Mapping[str, float]) -> float | None:
    """Dollars per hour of one attempt; 0 for the local backend; ``None`` for a GPU type with no price."""
    if backend != "modal":
        return 0.0
    gpu, _, n = gpu.upper().rstrip("!").partition(":")  # "H100:2" is two H100s: Modal bills each
    count = int(n) if n.isdigit() else 1
    price = prices.get(gpu, prices.get("*"))
    return None if price is None else price * count


def attempts(stage_events: Iterable[tuple[float, str]]) -> list[tuple[float, float | None]]:
    """Each training attempt's ``(start, end)`` from one experiment's ``(ts, stage)`` events in order;
    ``end`` is ``None`` while the attempt runs."""
    spans: list[tuple[float, float | None]] = []
    start = None
    for ts, stage in stage_events:
        if stage == "launching":
            if start is not None:  # a launch without an end seen: count it up to the new one
                spans.append((start, ts))
            start = ts
        elif stage in ATTEMPT_ENDS and start is not None:
            spans.append((start, ts))
            start = None
    if start is not None:
        spans.append((start, None))
    return spans


def gpu_hours(spans: Iterable[tuple[float, float | None]], now: float) -> float:
    return sum(max(0.0, (now if end is None else end) - start) for start, end in spans) / 3600


@dataclass(frozen=True)
class Cost:
    gpu: str
    price_per_hour: float | None
    gpu_hours: float
    dollars: float | None
    worst_case_dollars: float | None  # spent plus the most the caps still allow (for a live experiment)

    @classmethod
    def of(
        cls,
        backend: str,
        gpu: str,
        hours: float,
        prices: Mapping[str, float],
        live: bool,
        max_gpu_hours: float,
        timeout_min: float,
    ) -> Cost:
        price = price_per_hour(backend, gpu, prices)
        left = max(0.0, min(max_gpu_hours, MODAL_ATTEMPTS * timeout_min / 60) - hours) if live else 0.0
        spent = None if price is None else hours * price
        return cls(
            gpu if backend == "modal" else "local",
            price,
            hours,
            spent,
            None if price is None else spent + left * price,
        )

    def as_json(self) -> dict:
        def r(x: float | None, digits: int) -> float | None:
            return None if x is None else round(x, digits)

        return {
            "gpu": self.gpu,
            "price_per_hour": self.price_per_hour,
            "gpu_hours": r(self.gpu_hours, 4),
            "dollars": r(self.dollars, 2),
            "worst_case_dollars": r(self.worst_case_dollars, 2),
        }


def total(costs: Iterable[Cost]) -> dict:
    """The night's sum; a GPU type with no price leaves its dollars out and is named."""
    costs = list(costs)
    unpriced = sorted({c.gpu for c in costs if c.price_per_hour is None})
    return {
        "gpu_hours": round(sum(c.gpu_hours for c in costs if c.gpu != "local"), 4),
        "local_hours": round(sum(c.gpu_hours for c in costs if c.gpu == "local"), 4),
        "dollars": round(sum(c.dollars or 0.0 for c in costs), 2),
        "worst_case_dollars": round(sum(c.worst_case_dollars or 0.0 for c in costs), 2),
        "unpriced_gpus": unpriced,
    }
