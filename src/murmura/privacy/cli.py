"""``murmura privacy``: command-line tools for planning a differentially private run."""

from __future__ import annotations

import typer
from rich.console import Console

from murmura.errors import MurmuraError
from murmura.privacy.accountant import ACCOUNTANTS, plan_noise_multiplier

privacy_app = typer.Typer(help="Differential privacy: plan noise for an epsilon budget.")


@privacy_app.callback()
def _privacy() -> None:
    """Differential privacy tools."""


@privacy_app.command("plan")
def plan(
    epsilon: float = typer.Option(..., "--epsilon", help="Target epsilon for the whole run."),
    delta: float = typer.Option(1e-5, "--delta", help="Target delta."),
    rounds: int = typer.Option(..., "--rounds", help="Number of rounds (sampled steps)."),
    sample_rate: float = typer.Option(
        ..., "--sample-rate", help="Probability that a client takes part in a round."
    ),
    accountant: str = typer.Option(
        "rdp", "--accountant", help=f"One of: {', '.join(ACCOUNTANTS.names())}."
    ),
    population: int | None = typer.Option(
        None, "--population", help="Number of clients (needed by rdp_fixed_size)."
    ),
) -> None:
    """Print the noise multiplier that keeps a run within (epsilon, delta)."""
    console = Console()
    if accountant == "rdp_fixed_size" and population is None:
        console.print("[red]error:[/red] accountant rdp_fixed_size needs --population")
        raise typer.Exit(code=2)
    params = {} if population is None else {"population": population}
    try:
        result = plan_noise_multiplier(epsilon, delta, rounds, sample_rate, accountant, **params)
    except (MurmuraError, ValueError, TypeError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from err
    console.print(f"noise multiplier: {result.noise_multiplier:.4f}")
    console.print(
        f"epsilon reached: {result.epsilon:.4f} (target {epsilon:g}, delta {delta:g}, "
        f"{rounds} rounds at sample rate {sample_rate:g}, accountant {accountant})"
    )
