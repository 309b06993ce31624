import time

from bench.measure import timing


def test_summarize_quartiles():
    s = timing.summarize([1.0, 2.0, 3.0, 4.0, 100.0], "x")
    assert s.median_ms == 3.0 and s.min_ms == 1.0 and s.max_ms == 100.0 and s.q1_ms == 2.0 and s.q3_ms == 4.0


def test_cpu_measure_sees_the_work():
    calls = []
    s = timing.measure(lambda: time.sleep(0.002), "cpu", setup=lambda: calls.append(1), budget_s=0.2, min_reps=5)
    assert 1.8 <= s.median_ms <= 20 and s.reps >= 3 and s.method == "cpu_clock"
    assert len(calls) >= s.reps        # setup ran before every rep (and the warm-ups)


def test_first_call_time_is_apart():
    state = {"n": 0}

    def fn():
        state["n"] += 1
        if state["n"] == 1:
            time.sleep(0.05)      # a compile on the first call only
    assert timing.first_call_s(fn, "cpu") >= 0.05
    assert timing.measure(fn, "cpu", budget_s=0.05).median_ms < 5
