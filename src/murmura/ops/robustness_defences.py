"""The grid's defences from the command line: named ones, plain rules, and override specs."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

from murmura.errors import ConfigError
from murmura.ops.robustness import DEFENCES, Defence, rule_defence


def parse_defence(spec: str) -> Defence:
    """``NAME:section.key=VALUE,section.key=VALUE`` (TOML values) as a ``Defence``."""
    name, sep, body = spec.partition(":")
    if not sep or not name.strip() or not body.strip():
        raise ConfigError(
            f"--defence {spec!r}: expected NAME:section.key=VALUE,..., "
            'e.g. nnm+krum:strategy.pre_aggregation="nnm",strategy.aggregator="krum"'
        )
    overrides: dict[str, dict[str, Any]] = {}
    for item in body.split(","):
        key, eq, raw = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not eq or not dot or not section or not field:
            raise ConfigError(f"--defence {spec!r}: {item!r} is not section.key=VALUE")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(
                f"--defence {spec!r}: {raw.strip()!r} is not a TOML value (quote strings)"
            ) from None
        overrides.setdefault(section, {})[field] = value
    return Defence(name.strip(), overrides)


def chosen_defences(
    rules: str | None, names: str | None, specs: Sequence[str]
) -> list[str | Defence] | None:
    """The columns asked for: ``--rules``, ``--defences`` and ``--defence``; None: the defaults."""
    if not rules and not names and not specs:
        return None
    out: list[str | Defence] = []
    for rule in _split(rules):
        out.append(rule_defence(rule))
    for name in _split(names):
        if name not in DEFENCES:
            valid = ", ".join(DEFENCES)
            raise ConfigError(f"--defences: unknown defence {name!r}; valid: {valid}")
        out.append(DEFENCES[name])
    out += [parse_defence(s) for s in specs]
    return out


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]
