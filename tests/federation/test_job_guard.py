"""Nothing but configuration crosses the wire: a job cannot make a site or the coordinator
import code, and cannot set where the coordinator listens or keeps its state."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ConfigError, MurmuraError
from murmura.federation.config import load_federation, parse_job
from murmura.federation.job_guard import check_job_names
from murmura.federation.site_loop import StandingSite

JOB = """
[run]
rounds = 2
[task]
name = "digits"
[partition]
kind = "iid"
num_clients = 2
[strategy]
min_clients = 2
[server]
min_nodes = 2
"""


def test_a_plain_job_parses_with_its_timing() -> None:
    cfg, timing = parse_job(JOB)
    assert cfg.run.rounds == 2 and timing == {"min_nodes": 2}


@pytest.mark.parametrize("key", ["port", "cert", "state_dir", "allowlist", "host"])
def test_a_job_cannot_set_the_federations_server_keys(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} belong to the federation"):
        parse_job(JOB + f'{key} = "x"\n')


def test_an_unregistered_task_is_refused() -> None:
    with pytest.raises(ConfigError, match="no such task at this site; installed: .*digits"):
        parse_job(JOB.replace('"digits"', '"mnist-from-elsewhere"'))


@settings(max_examples=25)
@given(
    key=st.sampled_from(["task.name", "task.args.loader", "strategy.name", "run.name"]),
    module=st.from_regex(r"[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}", fullmatch=True),
    attr=st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
)
def test_any_code_reference_anywhere_in_a_job_is_refused(key: str, module: str, attr: str) -> None:
    section, *path = key.split(".")
    job: dict[str, object] = {"task": {"name": "digits"}}
    table = job.setdefault(section, {})
    assert isinstance(table, dict)
    for part in path[:-1]:
        table = table.setdefault(part, {})
    table[path[-1]] = f"{module}:{attr}"
    with pytest.raises(ConfigError, match=f"job key {key} = .* names code to import"):
        check_job_names(job)


def test_a_site_offered_a_job_naming_code_refuses_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "payload_mod.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\ndef make(**kw):\n    return None\n"
    )
    monkeypatch.chdir(tmp_path)  # resolve_user would put the cwd on sys.path
    built: list[object] = []
    site = StandingSite("127.0.0.1:1", "site-a", None, built.append)
    offer = {"id": "job-1", "address": "127.0.0.1:2", "submitter": "mallory",
             "config": JOB.replace('"digits"', '"payload_mod:make"')}  # fmt: skip
    with pytest.raises(MurmuraError, match="names code to import"):
        site._prepare(offer)
    assert not marker.exists() and "payload_mod" not in sys.modules and not built


def test_a_federation_config_holds_only_server_and_federation(tmp_path: Path) -> None:
    path = tmp_path / "federation.toml"
    path.write_text(
        "[server]\nport = 0\n[federation]\nmax_concurrent_jobs = 2\n[task]\nname='digits'\n"
    )
    with pytest.raises(ConfigError, match="task belong in a job"):
        load_federation(path)
    path.write_text("[server]\nport = 0\n[federation]\nmax_concurrent_jobs = 0\n")
    with pytest.raises(ConfigError, match=r"\[federation\]: max_concurrent_jobs"):
        load_federation(path)
    path.write_text("[server]\nport = 0\nstate_dir = 'st'\n[federation]\n")
    fed = load_federation(path)
    assert fed.federation.max_concurrent_jobs == 1 and fed.state_dir == Path("st")


def test_the_policy_decides_before_the_data_is_read_and_the_first_fit_is_charged() -> None:
    seen: list[tuple[str, ...]] = []

    def admission(cfg: object, submitter: str) -> object:
        seen.append(("policy", submitter))
        if getattr(cfg, "run").rounds > 1:  # noqa: B009 - any config object
            return "max_rounds = 1 < the job's 2"
        return lambda job_id, part, history: seen.append(("charge", job_id, part))

    class Learner:
        def fit(self, ins: object) -> str:
            seen.append(("fit",))
            return "trained"

    def make(cfg: object) -> object:
        seen.append(("data",))
        return Learner()

    site = StandingSite("127.0.0.1:1", "site-a", None, make, admission)  # type: ignore[arg-type]
    offer = {"id": "job-1", "address": "127.0.0.1:2", "submitter": "alice", "config": JOB}
    with pytest.raises(MurmuraError, match="max_rounds = 1 < the job's 2"):
        site._prepare(offer)
    assert seen == [("policy", "alice")]  # refused: the data was never read
    dp = '[privacy]\nmode = "local"\nnoise_multiplier = 2.0\n'
    one_round = {**offer, "id": "job-2", "config": JOB.replace("rounds = 2", "rounds = 1") + dp}
    worker = site._prepare(one_round)
    worker.close()
    assert seen[1:] == [("policy", "alice"), ("data",)]  # accepted: nothing released yet
    assert worker.client.fit(None) == "trained" and worker.client.fit(None) == "trained"
    assert seen[3:] == [("charge", "job-2", "job"), ("fit",), ("fit",)]  # charged once, first
