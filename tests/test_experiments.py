"""The experiment harness must never show a model the item it is asked to predict."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.experiments import PairContext, ProductSequential, RecentPopularity, held_out
from evaluation.splits import leave_one_out
from retrieval.records import Event, Item

DAY = 86_400.0


def rate(user: str, item: str, t: float, value: float = 4.0) -> Event:
    return Event(user_id=user, type="rate", timestamp=t, item_id=item, value=value)


def split_of(*histories: list[str], times: list[list[float]] | None = None):
    ids = sorted({i for h in histories for i in h})
    events = [rate(f"u{n}", item, (times[n][k] if times else float(k)))
              for n, h in enumerate(histories) for k, item in enumerate(h)]
    return leave_one_out([Item(id=i, title=i) for i in ids], events)


@pytest.mark.parametrize("k, train, target", [(0, list("abcd"), "e"), (1, list("abc"), "d"), (2, list("ab"), "c")])
def test_held_out_positions_move_back_and_hide_what_follows(k, train, target):
    split = held_out(split_of(list("abcdef")), k)
    stage = split.stage("valid")
    (user,) = split.users
    assert [e.item_id for e in user.train] == train and user.valid.item_id == target
    assert [stage.item_ids[j] for j in stage.histories[0]] == train  # nothing at or after the target


def test_recent_popularity_counts_only_what_came_before_the_users_latest_interaction():
    # u0's latest interaction is on day 10; x was popular on days 8-9, y only after day 10.
    late = [[0, 9 * DAY, 10 * DAY, 11 * DAY, 12 * DAY], [8 * DAY, 8.5 * DAY, 9 * DAY, 9.5 * DAY, 13 * DAY],
            [20 * DAY, 21 * DAY, 22 * DAY, 23 * DAY, 24 * DAY]]
    split = split_of(list("abcde"), list("xfghi"), list("yjklm"), times=late)
    stage = split.stage("valid")
    scores = RecentPopularity(tau_days=30).fit(stage).score(stage, [0])[0]
    column = {item: j for j, item in enumerate(stage.item_ids)}
    assert scores[column["x"]] > 0
    assert scores[column["y"]] == 0  # after day 10: the future is not counted


def test_request_time_popularity_counts_what_came_strictly_before_the_held_out_items_time():
    # u0 is asked on day 11 (its validation item); u1 watched x before, w at that second, v after.
    split = split_of(list("abcde"), list("xwvhi"),
                     times=[[0, 9 * DAY, 10 * DAY, 11 * DAY, 12 * DAY], [10.5 * DAY, 11 * DAY, 11.5 * DAY, 30 * DAY, 31 * DAY]])
    stage = split.stage("valid")
    column = {item: j for j, item in enumerate(stage.item_ids)}
    at_request = RecentPopularity(tau_days=30, at="request").fit(stage).score(stage, [0])[0]
    at_latest = RecentPopularity(tau_days=30).fit(stage).score(stage, [0])[0]
    assert at_request[column["x"]] > 0 and at_latest[column["x"]] == 0  # between the latest item and the ask
    assert at_request[column["w"]] == 0 and at_request[column["v"]] == 0  # at or after the ask: not known yet
    assert stage.target_times[0] == 11 * DAY


def test_pair_context_reads_the_last_two_items_in_order():
    split = split_of(list("abcxyz"), list("abdxyz"), list("baexyz"), list("qrabst"))
    stage = split.stage("valid")  # u3 sees q r a b; others show what followed "a b"
    scores = PairContext(window=1).fit(stage).score(stage, [3])[0]
    column = {item: j for j, item in enumerate(stage.item_ids)}
    assert scores[column["c"]] > 0 and scores[column["d"]] > 0
    assert scores[column["e"]] == 0  # e followed "b a", the other order


def test_product_sequential_reading_drops_low_ratings_only_when_asked():
    split = split_of(*[list("abcdefg")] * 3, list("abcuv"), list("abwv"))
    split.users[3].train[-1].value = 1.0  # u3 rated c, its newest training item, 1 star
    stage = split.stage("valid")
    consumed = ProductSequential().fit(stage).score(stage, [3, 4])
    positive = ProductSequential(reading="positive").fit(stage).score(stage, [3, 4])
    np.testing.assert_array_equal(positive[0], consumed[1])  # u3 read as "a b", like u4
    assert not np.array_equal(consumed[0], positive[0])  # the consumed reading keeps c
