"""OnlineResponse's server rendering: event times as text, rows worked out once per response."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from quiver.retrieval.response import OnlineResponse, iso_z


@given(st.integers(min_value=-(10**16), max_value=2 * 10**17))
def test_iso_z_is_datetimes_isoformat(us: int) -> None:
    want = (datetime(1970, 1, 1) + timedelta(microseconds=us)).isoformat() + "Z"
    assert iso_z(us) == want
    assert iso_z(us - us % 1_000_000) == want.split(".")[0].removesuffix("Z") + "Z"  # whole second: no fraction


def test_rendered_rows_are_the_results_of_each_slice() -> None:
    now = 1_795_600_000_123_456
    rows = [(1.5, now - 10), None, (2.5, now - 7_200_000_001)]
    resp = OnlineResponse({"user_id": [1, 2, 3]}, {"x": [1.5, None, 2.5], "odf": [0.1, 0.2, 0.3]},
                          {}, {"x": "v", "odf": None}, {"v": (rows, 7_200_000_000)}, now, 3)
    names, results, evaluated = resp.rendered(["user_id"])
    assert names == ["x", "odf"]
    assert evaluated == iso_z(now)
    for start, stop in ((0, 3), (1, 2), (2, 3)):
        assert results[start:stop] == resp.results(names, start, stop)
    assert [r["statuses"][0] for r in results] == ["present", "not_found", "outside_ttl"]
    assert resp.rendered(["user_id"])[1] is results  # once per response
    assert resp.rendered([])[0] == ["user_id", "x", "odf"]  # other keys: worked out again
