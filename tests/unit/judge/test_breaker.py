"""The circuit breaker: opens after N consecutive failures, lets one probe through after the pause, closes on a
good probe and opens again on a bad one."""

from medrl.judge.breaker import CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_opens_after_consecutive_failures_only():
    b = CircuitBreaker(failures=3, reset_s=10, clock=Clock())
    b.failure()
    b.failure()
    b.success()  # the count starts again
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    assert b.snapshot() == {"state": "open", "opened": 1, "closed": 0}


def test_half_open_lets_one_probe_through_and_closes_on_success():
    clock = Clock()
    b = CircuitBreaker(failures=1, reset_s=10, clock=clock)
    b.failure()
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow()  # the probe
    assert b.state == "half_open" and b.waiting_on_probe()
    assert not b.allow()  # nobody else while it is out
    b.success()
    assert b.state == "closed" and b.allow() and not b.waiting_on_probe()
    assert b.snapshot() == {"state": "closed", "opened": 1, "closed": 1}


def test_failed_probe_opens_again_for_a_full_pause():
    clock = Clock()
    b = CircuitBreaker(failures=2, reset_s=5, clock=clock)
    b.failure()
    b.failure()
    clock.now += 5
    assert b.allow()
    b.failure()  # one failed probe is enough, whatever the threshold
    assert b.state == "open" and b.opened == 2
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()
