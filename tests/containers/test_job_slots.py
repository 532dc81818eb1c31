"""Job slots: a backend's jobs beyond its limit wait in launch order and start as slots free."""

from __future__ import annotations

import pytest

from xnat_ml.containers.backends.local import slot_count
from xnat_ml.containers.slots import Slots
from xnat_ml.errors import XnatMlError


def test_jobs_beyond_the_limit_wait_and_start_in_order():
    started: list[int] = []
    slots = Slots(2, started.append)
    assert [slots.take(j) for j in (1, 2, 3, 4)] == [True, True, False, False]
    assert slots.take(3) is False and slots.waiting() == 2  # asking twice keeps one place
    slots.release(2)
    assert started == [3] and slots.take(3) is True  # 3 holds the freed slot
    slots.release(2)  # a second release of the same job frees nothing
    assert started == [3]
    slots.release(1)
    assert started == [3, 4] and slots.waiting() == 0


def test_a_waiting_job_that_leaves_the_line_never_starts():
    started: list[int] = []
    slots = Slots(1, started.append)
    assert slots.take(1) and not slots.take(2) and not slots.take(3)
    slots.release(2)  # killed while waiting
    slots.release(1)
    assert started == [3]


def test_no_limit_never_waits():
    slots = Slots(None, lambda _job: pytest.fail("nothing waits"))
    assert all(slots.take(j) for j in range(100))
    for j in range(100):
        slots.release(j)


@pytest.mark.parametrize("option", ["0", "-1", "two", "1.5"])
def test_bad_local_slots_is_one_line(option):
    with pytest.raises(XnatMlError, match=f"local_slots '{option}' must be a whole number"):
        slot_count(option)


def test_local_slots_default_and_given():
    assert slot_count(None) >= 4
    assert slot_count("3") == 3 and slot_count(1) == 1
