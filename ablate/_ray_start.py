"""``ray start`` as ``ablate ray up`` runs it (``python -m ablate._ray_start start --head ...``): Ray's own
command line, with the node's registration polled as in ablate's other local starts
(``_local_ray.prompt_node_registration``: Ray 2.60 otherwise waits a whole second for its own new node)."""

from __future__ import annotations

from ablate._local_ray import prompt_node_registration

if __name__ == "__main__":
    from ray.scripts.scripts import main

    with prompt_node_registration():
        main()
