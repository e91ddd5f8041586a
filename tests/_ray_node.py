"""`ray start` for a node that listens on loopback only (tests run a multi-node Ray on one machine).

Ray 2.60 turns a requested ``--node-ip-address 127.0.0.1`` into the machine's external address
when multi-node clusters are on (Linux), so its servers would listen on every interface; keeping
127.0.0.1 makes every server of the node bind to loopback. Usage: ``python _ray_node.py start ...``
with ``ray start``'s own arguments (``--node-ip-address 127.0.0.1``)."""

import sys
import time

from ray._private import services

services.resolve_ip_for_localhost = lambda host: host  # keep loopback as the node's address

_get_node = services.get_node


def _get_node_patiently(*args, **kwargs):
    """Ray gives a starting node 30 s to register with the GCS, and its raylet first waits for the
    node's dashboard agent (a Python process): on a loaded 2-core machine that can take longer."""
    deadline = time.monotonic() + 240
    while True:
        try:
            return _get_node(*args, **kwargs)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


services.get_node = _get_node_patiently

if __name__ == "__main__":
    from ray.scripts.scripts import main

    sys.argv[0] = "ray"
    main()
