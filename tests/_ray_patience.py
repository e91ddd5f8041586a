"""Ray gives a node it starts 30 s to register with its GCS (``ray._private.node.Node`` polls
``services.get_node``), and its raylet first waits for the node's dashboard agent (a Python process):
on a loaded 2-core machine (pytest-xdist -n 2 beside the other tests' Rays) that can take longer,
and then every test of a module errors at set-up. ``patient_ray_start`` lets this process wait longer."""

from __future__ import annotations

import time
from typing import Any


def patient_ray_start(wait_s: float = 240) -> None:
    """Make Ray's node start-up in this process wait up to ``wait_s`` for the node to register."""
    from ray._private import services

    if getattr(services.get_node, "patient", False):
        return
    get_node = services.get_node

    def get_node_patiently(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return get_node(*args, **kwargs)
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    get_node_patiently.patient = True  # type: ignore[attr-defined]
    services.get_node = get_node_patiently
