"""NtpAssociation.set_poll_limits (tsyncctl minpoll/maxpoll, chronyc's), on virtual time."""

from __future__ import annotations

from test_association import T0, S, make

from tsyncd.sync.association import poll_interval_ns


def test_a_lower_max_poll_brings_the_next_poll_nearer() -> None:
    a = make(min_poll=10, max_poll=10)
    a.handle_timer(a.next_deadline_ns() or T0)
    deadline = a.next_deadline_ns()
    assert deadline is not None and deadline - T0 > poll_interval_ns(9)
    a.set_poll_limits(-3, -3, T0 + S)
    assert (a.min_poll, a.max_poll, a.poll) == (-3, -3, -3)
    assert a.next_deadline_ns() == T0 + S + poll_interval_ns(-3)


def test_the_poll_moves_inside_new_limits_and_a_later_poll_stays() -> None:
    a = make(min_poll=4, max_poll=4)
    a.handle_timer(a.next_deadline_ns() or T0)
    deadline = a.next_deadline_ns()
    a.set_poll_limits(6, 8, T0)
    assert a.poll == 6 and a.next_deadline_ns() == deadline  # not pushed back
    a.reach = 1  # answered: the discipline's poll is followed, within the new limits
    a.set_system_poll(3)
    assert a.poll == 6
    a.set_system_poll(12)
    assert a.poll == 8


def test_a_kod_rate_floor_is_kept_within_the_new_limits() -> None:
    a = make(min_poll=4, max_poll=10)
    a._kod_poll = 7  # as a KoD RATE leaves it
    a.set_poll_limits(2, 10, T0)
    assert a.poll == 7 and a._kod_poll == 7
    a.set_poll_limits(2, 5, T0)
    assert a.poll == 5 and a._kod_poll == 5
    b = make(min_poll=6, max_poll=10)
    b.set_poll_limits(3, 10, T0)  # no kiss: the floor follows min-poll down
    b.set_online(False, T0)
    b.set_online(True, T0)
    assert b.poll == 3
