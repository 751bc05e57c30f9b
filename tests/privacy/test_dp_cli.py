import re

from typer.testing import CliRunner

from murmura.privacy.accountant import plan_noise_multiplier
from murmura.privacy.cli import privacy_app


def test_plan_prints_the_noise_multiplier_and_epsilon() -> None:
    args = ["plan", "--epsilon", "8", "--delta", "1e-5", "--rounds", "100", "--sample-rate", "0.1"]
    result = CliRunner().invoke(privacy_app, args)
    assert result.exit_code == 0, result.output
    z = re.search(r"noise multiplier: ([0-9.]+)", result.output)
    eps = re.search(r"epsilon reached: ([0-9.]+)", result.output)
    assert z and eps
    plan = plan_noise_multiplier(8, 1e-5, 100, 0.1)
    assert abs(float(z.group(1)) - plan.noise_multiplier) < 1e-4
    assert 0.99 * 8 <= float(eps.group(1)) <= 8.0


def test_plan_with_an_unknown_accountant_lists_the_valid_ones() -> None:
    args = ["plan", "--epsilon", "8", "--rounds", "10", "--sample-rate", "0.1", "--accountant", "x"]
    result = CliRunner().invoke(privacy_app, args)
    assert result.exit_code == 2
    assert "pld, rdp, rdp_fixed_size" in result.output
