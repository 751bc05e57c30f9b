"""The model card of a registered model: Markdown, for people deciding whether to use it.

After Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): what the model was
trained on and by whom, how well it does, its privacy guarantee in words and numbers, the
robustness settings it was trained under, and how to check that the weights are the ones
the run produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from murmura.ops.lineage import Lineage


def render_card(
    name: str, lineage: Lineage, config: Mapping[str, Any], summary: Mapping[str, Any]
) -> str:
    """The model card of ``lineage``'s model registered as ``name``."""
    sections = [
        f"# {name}\n\n{_trained(lineage, config)}",
        f"## Accuracy\n\n{_accuracy(summary)}",
        f"## Privacy\n\n{_privacy(lineage, config)}",
        f"## Robustness\n\n{_robustness(lineage, config)}",
        f"## Lineage\n\n{_table(lineage)}",
        f"## Verify\n\n{_verify(name, lineage)}",
    ]
    return "\n\n".join(sections) + "\n"


def _trained(lineage: Lineage, config: Mapping[str, Any]) -> str:
    task = config.get("task", {}).get("name", "?")
    strategy = config.get("strategy", {}).get("name", "?")
    topology = config.get("topology", {}).get("kind", "star")
    if lineage.nodes is not None:
        who = f"{len(lineage.nodes)} deployed sites ({', '.join(lineage.nodes) or 'none'})"
    else:
        who = f"{lineage.clients} simulated clients"
    return (
        f"A model for the `{task}` task, trained by federated learning ({strategy}, {topology} "
        f"topology) on {who} over {lineage.rounds} rounds, in murmura run `{lineage.run_id}`. "
        "The training data never left the sites; only model updates did."
    )


def _accuracy(summary: Mapping[str, Any]) -> str:
    lines = []
    central = summary.get("final_test_accuracy")
    if isinstance(central, int | float):
        lines.append(f"- central: {central:.4f} on the coordinator's test set")
    federated = summary.get("final_federated_accuracy")
    if isinstance(federated, int | float):
        n = summary.get("final_federated_clients")
        lines.append(f"- federated: {federated:.4f} on {n} sites' own held-out data")
    return "\n".join(lines) or "Not evaluated: the run had no test set and no federated evaluation."


def _privacy(lineage: Lineage, config: Mapping[str, Any]) -> str:
    privacy = config.get("privacy", {})
    mode = privacy.get("mode", "none")
    words = {
        "central": "central differential privacy: the server clipped each site's update and "
        "added Gaussian noise to their sum, so the model reveals little about whether any one "
        "site took part (site-level guarantee)",
        "local": "local differential privacy: each site clipped and noised its own update "
        "before sending it, so no party, the server included, saw a site's exact update",
        "none": "no differential privacy: the model may reveal information about the training data",
    }.get(str(mode), f"privacy mode {mode}")
    lines = [f"Trained with {words}."]
    if lineage.epsilon is not None:
        lines.append(
            f"Guarantee: (epsilon = {lineage.epsilon:.4g}, delta = {lineage.delta:g})-DP over "
            f"the whole run, by the {privacy.get('accountant', 'rdp')} accountant; the smaller "
            "epsilon, the stronger."
        )
    if privacy.get("dp_sgd"):
        lines.append("Each site also trained with DP-SGD (a record-level guarantee).")
    agg = "on" if lineage.secure_aggregation else "off"
    lines.append(
        f"Secure aggregation: {agg}"
        + (" (the server saw only the sum of each round's updates)." if agg == "on" else ".")
    )
    return " ".join(lines)


def _robustness(lineage: Lineage, config: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in sorted(lineage.aggregator_args.items()))
    lines = [f"- aggregator: `{lineage.aggregator}`" + (f" ({args})" if args else "")]
    strategy, anomaly = config.get("strategy", {}), config.get("anomaly", {})
    if strategy.get("max_weight_share") is not None:
        lines.append(f"- no site above {strategy['max_weight_share']} of a round's weight")
    if anomaly.get("enabled"):
        act = "excluded" if anomaly.get("exclude") else "flagged"
        lines.append(f"- anomalous updates ({anomaly.get('score')} score) were {act}")
    return "\n".join(lines)


def _table(lineage: Lineage) -> str:
    rows = ["| field | value |", "| --- | --- |"]
    for key, value in lineage.tags().items():
        rows.append(f"| {key.rsplit('.', 1)[-1]} | `{value}` |")
    return "\n".join(rows)


def _verify(name: str, lineage: Lineage) -> str:
    text = (
        "Re-hash the registered weights and compare them with this lineage:\n\n"
        f"    murmura registry verify {name} VERSION"
    )
    if lineage.audit_head is not None:
        text += (
            " --state STATE_DIR\n\n"
            "With the coordinator's state dir, the weights are also checked against the last "
            "round recorded in its signed audit ledger, and the ledger against its head:\n\n"
            f"    murmura audit verify STATE_DIR --head {lineage.audit_head}"
        )
    return text
