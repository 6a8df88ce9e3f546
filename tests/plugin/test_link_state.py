"""The backend's state as the dock shows it (no Qt): one change per state, not per check (issue 23, 6/13)."""

from __future__ import annotations

from plugin.connection.backend import BackendStatus
from plugin.connection.link_state import CONNECTED, NO_BROKER, NO_WORKER, LinkTracker
from tests.support.fake_clock import FakeClock

ADDRESS = "tcp://127.0.0.1:5555"
UP = BackendStatus(ADDRESS, {"m": {"workers": 2}}, "m", {"device": "cuda:0"})
NO_WORKERS = BackendStatus(ADDRESS, {}, error="the broker has no live workers (services: none)")
DOWN = BackendStatus(ADDRESS, error="lost the broker", reachable=False)


def test_docked_before_any_worker_waits_then_connects_with_one_change_each() -> None:
    clock = FakeClock()
    tracker = LinkTracker(clock)
    first = tracker.observe(NO_WORKERS)
    assert first is not None and first.after.state == NO_WORKER and not first.after.was_connected
    assert first.notification() == ("warning", f"SAM2: {NO_WORKERS.describe()}")
    for _ in range(5):
        clock.now += 1.0
        assert tracker.observe(NO_WORKERS) is None  # retried, not re-announced
    state = tracker.state
    assert state is not None and state.attempts == 6 and state.since_s == 1_000.0
    line = state.line(1.0, now_s=1_006.0)
    assert line.startswith("Waiting for the backend since") and "(6 s)" in line
    assert (
        "retrying: asking the broker at tcp://127.0.0.1:5555 for a live worker every 1 s (attempt 6)" in line
    )
    connected = tracker.observe(UP)
    assert connected is not None and connected.after.state == CONNECTED and connected.back
    assert connected.notification() == ("info", f"SAM2 backend connected: {UP.describe()}")


def test_a_lost_broker_is_one_loss_and_one_return() -> None:
    clock = FakeClock()
    tracker = LinkTracker(clock)
    first = tracker.observe(UP)
    assert first is not None and first.notification() is None  # connected at once: nothing to say
    clock.now += 10.0
    lost = tracker.observe(DOWN)
    assert lost is not None and lost.lost and lost.after.state == NO_BROKER and lost.after.was_connected
    severity, message = lost.notification() or ("", "")
    assert severity == "warning" and message.startswith("SAM2 backend lost: ")
    assert tracker.observe(DOWN) is None
    line = tracker.state.line(2.0, now_s=clock.now + 3.0) if tracker.state else ""
    assert (
        line.startswith("Backend lost since")
        and "connecting to the broker at" in line
        and "every 2 s" in line
    )
    between = tracker.observe(NO_WORKERS)  # the broker answers again, its workers not yet
    assert between is not None and not between.lost and between.notification()[0] == "info"  # type: ignore[index]
    back = tracker.observe(UP)
    assert (
        back is not None
        and back.back
        and back.notification()
        == (
            "info",
            f"SAM2 backend is back: {UP.describe()}",
        )
    )


def test_another_address_starts_afresh() -> None:
    tracker = LinkTracker()
    tracker.observe(UP)
    other = tracker.observe(BackendStatus("tcp://10.0.0.1:5555", error="no broker answers", reachable=False))
    assert other is not None and other.before is None and not other.after.was_connected
