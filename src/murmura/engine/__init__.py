"""The round engine: one run loop and one server round, shared by every topology and runtime.

``run_loop`` owns what a run decides between rounds (which rounds run, the privacy budget
stop, the evaluation and checkpoint cadence); ``server_round`` is one round of a server over
its learners (sample, configure, fit, validate), for a star's server, a tree's edges and the
deployed coordinator; ``edge_round`` is what an edge reports to its parent; ``peer_round`` is
one peer's round.
"""
