"""The recording functions: the same samples whether a labelled child is new or kept."""

from connector import metrics


def _count(sample: str, **labels: str) -> float:
    found = metrics.samples().get(sample, [])
    return sum(v for got, v in found if all(got.get(k) == w for k, w in labels.items()))


def test_commands_count_by_name_and_outcome_every_time():
    before = _count("connector_commands_total", name="ping", outcome="metrics-test")
    seconds = _count("connector_command_seconds_count", name="ping")
    for _ in range(3):
        metrics.command("ping", "metrics-test", 0.002)
    assert _count("connector_commands_total", name="ping", outcome="metrics-test") == before + 3
    assert _count("connector_command_seconds_count", name="ping") == seconds + 3


def test_odd_names_and_outcomes_stay_bounded():
    before = _count("connector_commands_total", name="other", outcome="x" * 60)
    metrics.command("no-such-command", "x" * 500)
    metrics.command(None, "x" * 61)
    assert _count("connector_commands_total", name="other", outcome="x" * 60) == before + 2


def test_logins_and_hub_calls_count():
    before = _count("connector_logins_total", method="hub", outcome="metrics-test")
    errors = _count("connector_hub_errors_total", endpoint="metrics-test")
    metrics.login("hub", "metrics-test", 0.001)
    metrics.login("hub", "metrics-test")
    metrics.hub_error("metrics-test")
    metrics.hub_request("metrics-test", 0.01)
    assert _count("connector_logins_total", method="hub", outcome="metrics-test") == before + 2
    assert _count("connector_hub_errors_total", endpoint="metrics-test") == errors + 1
    assert _count("connector_hub_request_seconds_count", endpoint="metrics-test") >= 1


def test_past_its_limit_a_child_is_still_counted_but_not_kept():
    children = metrics._Children(metrics.HUB_ERRORS, limit=2)
    for endpoint in ("limit-a", "limit-b", "limit-c", "limit-c"):
        children.get(endpoint).inc()
    assert len(children._known) == 2
    assert _count("connector_hub_errors_total", endpoint="limit-c") == 2
