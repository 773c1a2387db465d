"""The values the state store hands a poll (pure)."""

from __future__ import annotations

from typing import Optional

import pytest

from smartpop.collector.staterows import reused_uid


@pytest.mark.parametrize(("recorded", "listed", "reused"), [
    (100, 100, False),  # the same message
    (100, 120, True),  # the server gave a new message an old uid
    (None, 120, False),  # recorded before sizes were kept: no verdict
    (100, None, False),  # the server did not list a size
    (100, 0, False),  # a server that lists 0 for everything
    (0, 120, False),
])
def test_a_done_uid_is_reused_only_when_both_sizes_are_known_and_differ(recorded: Optional[int], listed: Optional[int],
                                                                        reused: bool) -> None:
    assert reused_uid(recorded, listed) is reused
