"""Federated analytics: statistics of the sites' data computed from their sums alone.

A statistics round is a round kind of its own: every site summarises its rows
(``summary``: counts, float64 sums, M2, histograms, labels), the aggregator merges the
summaries (Chan et al. 1979) or sums their bounded form under SecAgg+ (``bounded``), adds
Gaussian noise when asked (accounted by the run's accountant), and releases the statistics
(``result``). ``simulate`` runs it over a ``FederatedDataset``; ``grpc_round`` runs it with
deployed workers; ``standardise`` turns it into a task's feature scaling.
"""
