"""`ray start` for a node that listens on loopback only (tests run a multi-node Ray on one machine).

Ray 2.60 turns a requested ``--node-ip-address 127.0.0.1`` into the machine's external address
when multi-node clusters are on (Linux), so its servers would listen on every interface; keeping
127.0.0.1 makes every server of the node bind to loopback. Usage: ``python _ray_node.py start ...``
with ``ray start``'s own arguments (``--node-ip-address 127.0.0.1``)."""

import sys

from ray._private import services

from _ray_patience import patient_ray_start

services.resolve_ip_for_localhost = lambda host: host  # keep loopback as the node's address

patient_ray_start()  # a starting node gets 240 s, not 30 s, to register with the GCS

if __name__ == "__main__":
    from ray.scripts.scripts import main

    sys.argv[0] = "ray"
    main()
