"""Deterministic clock-and-network simulator that drives the real sync core (issue 3).

``Scenario`` (``scenarios.py``) describes an oscillator, a network and servers; ``simulate``
(``engine.py``) runs the real ``tsyncd.sync.core.SyncCore`` with the real discipline over a
``VirtualClock`` on the simulated oscillator, against the real ``NtpResponder``, and records the
client clock's true offset and frequency error every simulated second.  Same seed, same result.
"""
