"""``murmura client`` as a standing site: its identity, its local data and its policy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from murmura.errors import ConfigError
from murmura.federation.site_loop import Admission, StandingSite, accept_all
from murmura.node.instructions import InstructionLimits
from murmura.node.worker import FitClient
from murmura.transport import keys


def standing_site(
    server: str,
    node: str,
    credentials: keys.Credentials | None,
    site: Path | None,
    partition: str | None,
    limits: InstructionLimits,
) -> StandingSite:
    """A site that waits for jobs: on its ``--site`` data, or on ``--partition i/n`` (demos)."""
    make: Callable[[Any], FitClient]
    admission: Admission = accept_all
    if site is not None:
        from murmura.federation.admission import site_admission
        from murmura.node.site import load_site_config, site_client

        site_cfg = load_site_config(site)  # a bad site config fails now, not at the first job
        admission = site_admission(site, site_cfg)

        def make(cfg: Any) -> FitClient:
            return site_client(site_cfg, cfg, node)

    elif partition is not None:
        from murmura.node.deploy import client_from_config, parse_partition

        parse_partition(partition)
        part = partition

        def make(cfg: Any) -> FitClient:
            return client_from_config(cfg, part)

    else:
        raise ConfigError("a standing site needs --site SITE.toml or --partition i/n")
    return StandingSite(server, node, credentials, make, admission, limits)
