"""The round engine: one run loop and one server round, shared by every topology and runtime.

``run_loop`` owns what a run decides between rounds (which rounds run, the privacy budget
stop, the evaluation and checkpoint cadence); ``server_round`` is one round of a server over
its learners (sample, configure, fit, validate), for a star's server and a tree's edges.
"""
