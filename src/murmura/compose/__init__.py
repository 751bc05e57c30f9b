"""The composition root: config (pydantic) turned into objects, one builder per role.

``workload`` (task, clients' data, initial model), ``server`` (the server's strategy),
``learner`` (a client's or a tree leaf's learner with its wrappers), ``edge`` (a tree edge's
rule), ``peer`` (a peer's graph, learner, mixer and gossip codec) and ``kinds`` (which
builders each topology kind composes). The simulation (``murmura.sim``) and the deployed
roles (``murmura.node``) both build from here, so they cannot drift; nothing here imports
either of them.
"""
