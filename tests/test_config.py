from pathlib import Path

import pytest

from murmura.config import Config, apply_overrides, config_from_dict, load_config
from murmura.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_every_key_has_a_default() -> None:
    cfg = Config()
    assert cfg.run.rounds >= 1 and cfg.task.name == "digits" and cfg.strategy.name == "fedavg"
    assert config_from_dict({}) == cfg


def test_w1_example_matches_the_workload() -> None:
    cfg = load_config(ROOT / "examples" / "digits-fedavg.toml")
    assert (cfg.partition.kind, cfg.partition.num_clients, cfg.partition.alpha) == (
        "dirichlet",
        100,
        0.5,
    )
    assert (cfg.client.epochs, cfg.client.batch_size, cfg.client.lr) == (5, 16, 0.05)
    assert (cfg.run.rounds, cfg.strategy.fraction, cfg.strategy.name) == (20, 1.0, "fedavg")


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "[client]\nepochz = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "client.epochz" in msg
    assert "allowed keys here: epochs, batch_size, lr" in msg


def test_unknown_table_lists_tables(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match="key 'clients': unknown key; allowed keys here: run, task"
    ):
        load_config(write(tmp_path, "[clients]\nepochs = 3\n"))


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'run.rounds': .*integer.*'twenty'"):
        load_config(write(tmp_path, '[run]\nrounds = "twenty"\n'))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("[partition]\nalpha = 0\n", r"key 'partition.alpha': Input should be greater than 0"),
        ("[partition]\nalpha = -1.5\n", r"partition.alpha"),
        (
            "[strategy]\nfraction = 1.5\n",
            r"key 'strategy.fraction': Input should be less than or equal to 1",
        ),
        (
            '[partition]\nkind = "zipf"\n',
            r"key 'partition.kind': Input should be 'iid', 'dirichlet'",
        ),
        (
            "[partition]\nnum_clients = 5\n[strategy]\nmin_clients = 6\n",
            r"strategy.min_clients = 6 but partition.num_clients = 5",
        ),
        (
            '[strategy]\naggregator = "avg"\n',
            r"key 'strategy.aggregator': unknown aggregator 'avg'; valid: .*weighted_mean",
        ),
        (
            '[strategy]\nname = "fedfoo"\n',
            r"key 'strategy.name': unknown strategy 'fedfoo'; valid: .*fedavg",
        ),
        (
            '[task]\nname = "digitz"\n',
            r"key 'task.name': unknown task 'digitz'; valid: digits, image, synthetic, tabular",
        ),
    ],
)
def test_impossible_values_fail_before_training(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path, text))


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[run\n"))


def test_overrides_are_typed_and_nested(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "[run]\nrounds = 3\n"),
        ["run.rounds=7", "task.name=synthetic", "partition.kind=natural"],
    )
    assert cfg.run.rounds == 7 and cfg.task.name == "synthetic"
    assert apply_overrides({"a": {"b": 1}}, ["a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["rounds"])


def test_a_check_across_tables_reads_as_its_own_message(tmp_path: Path) -> None:
    path = write(tmp_path, '[topology]\nkind = "tree"\n[evaluation]\nfederated = true\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        f"{path}: evaluation.federated = true needs a server-client run "
        "(topology.kind = 'star'), got 'tree'"
    )
