"""``murmura edge --standing``: a standing edge's identity and policy, until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

from murmura.transport import keys


def standing_edge(
    server: str,
    tls: tuple[Path | None, Path | None, Path | None],
    name: str | None,
    insecure: bool,
    host: str,
    port: int,
    state_dir: Path,
    policy: Path | None,
) -> None:
    """Serve the federation's tree jobs as an edge until Ctrl-C, then exit 0."""
    from murmura.federation.edge_loop import StandingEdge, edge_policy
    from murmura.federation.standing_cli import run_standing
    from murmura.node.cli import fail

    def build(node: str, creds: keys.Credentials | None) -> StandingEdge:
        rules = edge_policy(policy) if policy is not None else None
        return StandingEdge(server, node, creds, host, port, state_dir, rules)

    run_standing(build, tls, name, insecure, "--standing", "edge", fail)
