"""Ports for the mesh's servers come from outside the kernel's ephemeral range, where an
outgoing connection cannot take them between choosing and binding (stellwerk/supervisor.py)."""

from __future__ import annotations

import socket

from stellwerk.supervisor import _ephemeral_range, free_port


def test_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert not [p for p in ports if low <= p <= high]
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # raises if it were taken
