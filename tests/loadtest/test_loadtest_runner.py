"""The Runner drives gevent users for a duration, counts ops and errors, runs actions and marks.

Real gevent, short durations; assertions are on counts that do not depend on speed.
"""
from __future__ import annotations

import gevent
import pytest

from topgun.errors import ConfigurationError, OperationTimeout
from topgun.loadtest import Runner, constant


def test_runner_counts_successes_failures_and_ticks() -> None:
    ticks = []

    def task(user) -> None:
        gevent.sleep(0.001)
        if user.calls % 5 == 4:
            raise OperationTimeout("every fifth call fails")

    runner = Runner(task, users=4, duration=0.3, ops_per_call=10, tick=0.1,
                    on_tick=lambda t, fig: ticks.append(fig))
    result = runner.run()
    stats = result.stats
    assert stats.calls > 0 and stats.failed_calls > 0
    assert stats.ops == stats.calls * 10 and stats.failed_ops == stats.failed_calls * 10
    assert set(stats.errors_by_type) == {"OperationTimeout"}
    # each user fails exactly its calls 5, 10, ...: failures are a fifth of the calls, per user
    assert stats.failed_calls <= (stats.calls + stats.failed_calls) // 5 + 4
    assert result.killed_users == 0
    assert 0.3 <= result.elapsed_s < 5.0
    assert ticks and sum(t["ops"] for t in ticks) <= stats.ops


def test_runner_actions_and_recovery_marks() -> None:
    state = {"down": False}

    def task(user) -> None:
        gevent.sleep(0.002)
        if state["down"]:
            raise OperationTimeout("down")

    runner = Runner(task, users=3, duration=0.6)

    def outage() -> dict:
        state["down"] = True
        runner.mark("kill n1")
        gevent.sleep(0.1)
        state["down"] = False
        return {"node": "n1"}

    def broken() -> None:
        raise RuntimeError("cannot")

    runner.at(0.2, outage, "outage")
    runner.at(0.1, broken, "broken action")
    result = runner.run()
    events = {e["name"]: e for e in result.events}
    assert events["outage"]["ok"] and events["outage"]["node"] == "n1"
    assert not events["broken action"]["ok"] and "RuntimeError: cannot" in events["broken action"]["error"]
    (marker,) = result.markers
    assert marker.users == 3 and len(marker.recovered) == 3
    # nobody can have recovered before the outage ended, 0.1 s after the mark
    assert min(marker.recovered.values()) >= 0.09
    assert marker.recovery_s == max(marker.recovered.values())
    assert marker.as_dict()["users_recovered"] == 3


def test_runner_kills_calls_that_outlive_the_grace() -> None:
    def task(user) -> None:
        gevent.sleep(30)

    result = Runner(task, users=2, duration=0.05, stop_grace=0.1, pacing=constant(0)).run()
    assert result.killed_users == 2 and result.stats.calls == 0


@pytest.mark.parametrize("kw", [{"users": 0, "duration": 1}, {"users": 1, "duration": 0},
                                {"users": 1, "duration": 1, "ramp_up": 2}])
def test_runner_rejects_bad_settings(kw) -> None:
    with pytest.raises(ConfigurationError):
        Runner(lambda user: None, **kw)


def test_an_action_outliving_the_load_finishes_before_run_returns() -> None:
    done = []

    def slow_restart() -> dict:
        gevent.sleep(0.2)
        done.append(True)
        return {"node": "n2"}

    runner = Runner(lambda user: gevent.sleep(0.001), users=2, duration=0.1, stop_grace=5.0)
    runner.at(0.05, slow_restart, "restart")
    result = runner.run()
    assert done == [True]
    assert [e["name"] for e in result.events] == ["restart"] and result.events[0]["ok"]
