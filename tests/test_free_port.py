"""Ports chosen for a server that binds them a moment later (the embedded broker, the SES emulator in the
bench, the demo's tracking page) come from under the kernel's ephemeral range: a port from ``bind(0)`` may
be handed to the next ``bind(0)`` before its server has bound it."""

from __future__ import annotations

import socket

from streams.kafka.embedded_broker import BELOW_EPHEMERAL, _ephemeral_start, free_port


def test_a_free_port_comes_from_under_the_kernels_ephemeral_range_where_no_bind_zero_can_take_it_first():
    low = _ephemeral_start()
    ports = [free_port() for _ in range(20)]
    assert all(max(1024, low - BELOW_EPHEMERAL) <= port < low for port in ports), ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports[0]))  # free indeed

