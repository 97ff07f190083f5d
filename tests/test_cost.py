import pytest

from kdq.cost import DEFAULT_PRICES, Cost, attempts, gpu_hours, parse_prices, price_per_hour, total


def test_prices_default_per_gpu_type_and_can_be_overridden():
    assert parse_prices(None)["H100"] == DEFAULT_PRICES["H100"] == 3.95
    prices = parse_prices("h100:4.5, A10G:1")
    assert prices["H100"] == 4.5 and prices["A10G"] == 1.0 and prices["L4"] == DEFAULT_PRICES["L4"]
    flat = parse_prices("2")
    assert flat["H100"] == flat["T4"] == 2.0 and price_per_hour("modal", "MYSTERY", flat) == 2.0


@pytest.mark.parametrize("bad", ["cheap", "H100:", ":3", "H100:-1"])
def test_a_bad_price_says_how_to_write_one(bad):
    with pytest.raises(ValueError, match="H100"):
        parse_prices(bad)


def test_price_per_hour_local_is_free_and_counts_gpus():
    prices = parse_prices(None)
    assert price_per_hour("local", "H100", prices) == 0.0
    assert price_per_hour("modal", "H100:2", prices) == pytest.approx(7.9)
    assert price_per_hour("modal", "RTX9090", prices) is None


def test_attempts_run_from_launch_to_the_end_of_training():
    events = [
        (0, "queued"),
        (10, "launching"),
        (20, "training"),
        (3610, "failed"),  # attempt 1: an hour
        (4000, "queued"),
        (5000, "launching"),
        (5100, "training"),
        (6800, "fetching"),  # attempt 2: 1,800 s
        (6900, "validating"),
        (7000, "ready"),
    ]
    assert attempts(events) == [(10, 3610), (5000, 6800)]
    assert gpu_hours(attempts(events), now=99999) == pytest.approx(1.5)
    running = attempts([(0, "queued"), (100, "launching"), (200, "training")])
    assert running == [(100, None)] and gpu_hours(running, now=3700) == pytest.approx(1.0)


def test_cost_and_the_worst_case_under_the_caps():
    prices = parse_prices(None)
    live = Cost.of("modal", "H100", 1.0, prices, live=True, max_gpu_hours=8.0, timeout_min=60)
    assert live.dollars == pytest.approx(3.95)
    # two attempts of an hour (Modal retries once) cap it at 2 h, less the hour used: 1 h more at most
    assert live.worst_case_dollars == pytest.approx(2 * 3.95)
    capped = Cost.of("modal", "H100", 1.0, prices, live=True, max_gpu_hours=1.5, timeout_min=240)
    assert capped.worst_case_dollars == pytest.approx(1.5 * 3.95)
    over = Cost.of("modal", "H100", 9.0, prices, live=True, max_gpu_hours=8.0, timeout_min=240)
    assert over.worst_case_dollars == over.dollars  # never less than what was spent
    done = Cost.of("modal", "A10G", 2.0, prices, live=False, max_gpu_hours=8.0, timeout_min=240)
    assert done.worst_case_dollars == done.dollars == pytest.approx(2.2)
    local = Cost.of("local", "H100", 2.0, prices, live=True, max_gpu_hours=8.0, timeout_min=240)
    assert (local.gpu, local.dollars, local.worst_case_dollars) == ("local", 0.0, 0.0)
    unknown = Cost.of("modal", "RTX9090", 1.0, prices, live=True, max_gpu_hours=8.0, timeout_min=240)
    night = total([live, done, local, unknown])
    assert night["gpu_hours"] == pytest.approx(4.0) and night["local_hours"] == pytest.approx(2.0)
    assert night["dollars"] == pytest.approx(3.95 + 2.2) and night["unpriced_gpus"] == ["RTX9090"]
    assert live.as_json()["worst_case_dollars"] == 7.9
    assert price_per_hour("modal", "H100!", prices) == 3.95  # insists on an H100: the same price
