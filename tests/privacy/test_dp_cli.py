import logging
import re
import subprocess
import sys
from typing import get_args

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from murmura.config import PrivacySection
from murmura.privacy.accountant import ACCOUNTANTS, AccountantName, plan_noise_multiplier
from murmura.privacy.cli import privacy_app
from murmura.privacy.dp_log import quiet_convergence_warnings


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
    result = CliRunner().invoke(privacy_app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'x' is not one of 'rdp', 'pld'" in result.output


@pytest.mark.parametrize("name", [*sorted(ACCOUNTANTS.names()), "x"])
def test_plan_and_the_config_accept_the_same_accountants(name: str) -> None:
    assert set(get_args(AccountantName)) <= set(ACCOUNTANTS.names())
    try:
        PrivacySection(accountant=name)
        in_config = True
    except ValidationError:
        in_config = False
    assert in_config == (name in get_args(AccountantName))
    args = ["plan", "--epsilon", "8", "--rounds", "10", "--sample-rate", "0.1"]
    result = CliRunner().invoke(privacy_app, [*args, "--accountant", name])
    assert result.exit_code == (0 if in_config else 2), result.output


def test_plan_prints_no_absl_convergence_warnings() -> None:
    """The CLI as a user runs it: ~20 absl "failed to converge" lines preceded the answer."""
    args = ["privacy", "plan", "--epsilon", "8", "--rounds", "100", "--sample-rate", "0.1"]
    code = "import sys; from murmura.cli import app; sys.argv[0] = 'murmura'; app()"
    run = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr
    assert "absl" not in output and "converge" not in output, output
    assert output.splitlines()[0].startswith("noise multiplier: 0.9963"), output


def test_only_the_expected_warning_is_dropped_and_only_in_scope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING, logger="absl"):
        with quiet_convergence_warnings() as quiet:
            absl.warning("_compute_log_a_frac failed to converge after %d iterations", 1000)
            absl.warning("Negative Renyi divergence of %s", -1.0)
        absl.warning("_compute_log_a_frac failed to converge after %d iterations", 1000)
    assert quiet.dropped == 1
    assert [r.getMessage() for r in caplog.records] == [
        "Negative Renyi divergence of -1.0",
        "_compute_log_a_frac failed to converge after 1000 iterations",
    ]
    assert quiet not in absl.filters
