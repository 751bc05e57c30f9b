from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from murmura.errors import ConfigError
from murmura.simtime.availability import INF, Diurnal, Trace
from murmura.simtime.profiles import Profile, lognormal_speeds

NODES = [f"client-{i}" for i in range(50)]


@given(st.floats(min_value=0, max_value=1e6))
def test_diurnal_window_holds_t_or_is_the_next_on_period(t: float) -> None:
    d = Diurnal(NODES, period=100.0, on_fraction=0.3, seed=0)
    for n in NODES[:5]:
        start, end = d.window(n, t)
        assert end - start <= 30.0 + 1e-6 and end > t
        assert start == t or t < start <= t + 70.0 + 1e-6


def test_diurnal_keeps_thirty_percent_reachable() -> None:
    d = Diurnal(NODES * 1, period=100.0, on_fraction=0.3, seed=0)
    share = [sum(d.window(n, t)[0] <= t for n in NODES) / len(NODES) for t in range(0, 1000, 7)]
    assert 0.2 < sum(share) / len(share) < 0.4


def test_trace_windows_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "trace.csv"
    f.write_text("client,start,end\nclient-0,10,20\nclient-0,30,40\n")
    tr = Trace.read(f, ["client-0", "client-1"])
    assert tr.window("client-0", 0) == (10, 20)
    assert tr.window("client-0", 15) == (15, 20)
    assert tr.window("client-0", 25) == (30, 40)
    assert tr.window("client-0", 40) == (INF, INF)
    assert tr.window("client-1", 0) == (INF, INF)
    f.write_text("client,start,end\nclient-9,1,2\n")
    with pytest.raises(ConfigError, match="line 2: unknown client 'client-9'"):
        Trace.read(f, ["client-0"])
    f.write_text("client,start,end\nclient-0,5,2\n")
    with pytest.raises(ConfigError, match="line 2: start 5.0 >= end 2.0"):
        Trace.read(f, ["client-0"])


def test_lognormal_speeds_are_seeded_with_the_given_median_and_spread() -> None:
    s = lognormal_speeds(4000, 0.5, 1.0, seed=3)
    assert s == lognormal_speeds(4000, 0.5, 1.0, seed=3)
    median = sorted(s)[2000]
    assert 0.45 < median < 0.55
    assert max(s) / min(s) > 100  # sigma 1: a wide spread


def test_profile_seconds_add_download_compute_upload() -> None:
    assert Profile(0.1, up_bps=100.0, down_bps=1000.0).seconds(50, 2000, 300) == 2 + 5 + 3
