"""``murmura privacy``: command-line tools for planning a differentially private run."""

from __future__ import annotations

from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.markup import escape

from murmura.errors import MurmuraError
from murmura.privacy.accountant import AccountantName, plan_noise_multiplier

_CHOICES = ", ".join(get_args(AccountantName))

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
    accountant: Annotated[
        AccountantName,
        typer.Option(
            "--accountant", help=f"One of: {_CHOICES}; the same as privacy.accountant in a config."
        ),
    ] = "rdp",
) -> None:
    """Print the noise multiplier that keeps a run within (epsilon, delta)."""
    console = Console()
    try:
        result = plan_noise_multiplier(epsilon, delta, rounds, sample_rate, accountant)
    except (MurmuraError, ValueError, TypeError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        raise typer.Exit(code=2) from err
    console.print(f"noise multiplier: {result.noise_multiplier:.4f}")
    console.print(
        f"epsilon reached: {result.epsilon:.4f} (target {epsilon:g}, delta {delta:g}, "
        f"{rounds} rounds at sample rate {sample_rate:g}, accountant {accountant})"
    )
