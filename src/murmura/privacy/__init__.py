"""Privacy: clipping, noise, accounting and secure aggregation."""
