"""A tree job names its standing edges and their sites in [edge.NAME] tables; what cannot run
is refused at submission with the reason, and the runner offers each site its edge."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from murmura.cli import app
from murmura.errors import ConfigError, MurmuraError
from murmura.federation.config import FederationConfig, FederationSection, parse_job_tree
from murmura.federation.edge_loop import StandingEdge, edge_policy
from murmura.federation.runner import ActiveJob, JobRunner
from murmura.federation.store import JobStore
from murmura.node.deploy import ServerSection
from murmura.ops.audit import AuditLedger

RUN = """
[run]
rounds = 2
[task]
name = "digits"
[partition]
kind = "iid"
num_clients = 4
[strategy]
min_clients = 2
"""
TREE = (
    RUN
    + """
[topology]
kind = "tree"
edges = 2
[edge.edge-1]
allowlist = ["site-a", "site-b"]
round_timeout = 30
[edge.edge-2]
allowlist = ["site-c", "site-d"]
"""
)


def test_a_tree_job_maps_each_site_to_its_edge_and_each_edge_to_its_section() -> None:
    cfg, timing, tree = parse_job_tree(TREE)
    assert cfg.topology.kind == "tree" and timing == {} and tree is not None
    assert list(tree.edges) == ["edge-1", "edge-2"]
    assert [tree.edge_of(s) for s in ("site-a", "site-b", "site-c", "site-d", "site-x")] == [
        "edge-1", "edge-1", "edge-2", "edge-2", None,
    ]  # fmt: skip
    assert tree.sites("edge-2") == ["site-c", "site-d"] and tree.need("edge-1") == 2
    sec = tree.section("edge-1", "127.0.0.1:5000", "127.0.0.1", 0, None, "state/jobs/job-1")
    assert (sec.name, sec.parent, sec.allowlist) == (
        "edge-1",
        "127.0.0.1:5000",
        ["site-a", "site-b"],
    )
    assert (sec.round_timeout, sec.min_nodes, sec.state_dir) == (30.0, 2, "state/jobs/job-1")


def test_a_star_job_has_no_tree() -> None:
    assert parse_job_tree(RUN)[2] is None


@pytest.mark.parametrize(
    ("job", "reason"),
    [
        (RUN + '[topology]\nkind = "tree"\n', r"kind = 'tree' needs an \[edge.NAME\] table"),
        (RUN + '[edge.e]\nallowlist = ["s"]\n', r"\[edge\] tables name a tree's edges; .* 'star'"),
        (TREE.replace("edges = 2", "edges = 3"), r"edges = 3, but the job names 2 edges"),
        (TREE.replace('"site-c", "site-d"', '"site-c", "site-a"'),
         r"site 'site-a' is under two edges, \[edge.edge-1\] and \[edge.edge-2\]"),
        (TREE.replace('"site-c", "site-d"', '"site-c", "edge-1"'),
         r"'edge-1' is an edge and a site of \[edge.edge-2\]"),
        (TREE.replace("round_timeout = 30", 'host = "0.0.0.0"'),
         r"\[edge.edge-1\]: host belong to the standing edge"),
        (TREE.replace("round_timeout = 30", "parent = \"x:1\""), r"parent belong to the standing"),
        (TREE.replace('allowlist = ["site-a", "site-b"]', "allowlist = []"),
         r"allowlist must list the edge's sites"),
        (TREE.replace('"site-c", "site-d"', '"site-c", "site-c"'), r"each once"),
        (TREE.replace("round_timeout = 30", "round_timeout = -1"),
         r"\[edge.edge-1\]: round_timeout: Input should be greater than 0"),
    ],
)  # fmt: skip
def test_what_cannot_run_as_a_tree_is_refused_with_the_reason(job: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_job_tree(job, "job-1")


def test_a_setting_one_of_the_jobs_roles_would_refuse_is_refused_at_submission() -> None:
    stats = "\n[stats]\nenabled = true\n"
    assert parse_job_tree(RUN + stats)[0].stats.enabled  # a star's coordinator runs it
    with pytest.raises(ConfigError, match=r"^job-1: \[stats\] enabled = true is not applied by "
                       r"murmura edge"):  # fmt: skip
        parse_job_tree(TREE + stats, "job-1")
    with pytest.raises(ConfigError, match=r"^job-1: \[stats\] secure_aggregation = true is not "
                       r"applied by murmura server"):  # fmt: skip
        parse_job_tree(RUN + stats + "minmax = false\nsecure_aggregation = true\n", "job-1")
    files = TREE.replace('kind = "iid"', 'kind = "files"\npath = "data"')
    files = files.replace('name = "digits"', 'name = "tabular"\n[task.args.schema]\nlabel = "y"')
    assert parse_job_tree(files + "[evaluation]\ncentral = false\n")[0].partition.kind == "files"
    with pytest.raises(ConfigError, match=r"^job-1: \[evaluation\] central = true: the "
                       r"coordinator of a files job holds no data"):  # fmt: skip
        parse_job_tree(files + "[evaluation]\ncentral = true\n", "job-1")


def test_central_dp_refuses_a_site_the_runs_clients_cannot_map() -> None:
    dp = '\n[privacy]\nmode = "central"\nnoise_multiplier = 1.0\nclip_norm = 1.0\n'
    with pytest.raises(ConfigError, match="child 'site-a' is none of them"):
        parse_job_tree(TREE + dp)
    mapped = TREE.replace("round_timeout = 30", "client_index = {site-a = 0, site-b = 1}")
    mapped = mapped.replace('"site-c", "site-d"', '"client-2", "client-3"')
    _, _, tree = parse_job_tree(mapped + dp)
    assert tree is not None and tree.edge_of("client-3") == "edge-2"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=8))
def test_every_site_has_exactly_one_edge(owners: list[int]) -> None:
    """Sites spread over up to 3 edges: each is found under the edge that names it."""
    edges = sorted(set(owners))
    tables = "".join(
        f"[edge.e{e}]\nallowlist = {[f's{i}' for i, o in enumerate(owners) if o == e]}\n"
        for e in edges
    ).replace("'", '"')
    job = RUN + f'[topology]\nkind = "tree"\nedges = {len(edges)}\n' + tables
    _, _, tree = parse_job_tree(job)
    assert tree is not None
    assert [tree.edge_of(f"s{i}") for i in range(len(owners))] == [f"e{o}" for o in owners]


def _runner(tmp_path: Path, answer_timeout: float) -> tuple[JobRunner, JobStore, str]:
    fed = FederationConfig(
        ServerSection(state_dir=str(tmp_path)), FederationSection(answer_timeout=answer_timeout)
    )
    store = JobStore(tmp_path)
    runner = JobRunner(fed, store, AuditLedger.open(tmp_path), insecure=True)
    job = store.submit("t", "alice", TREE)
    store.start(job.id)
    _, _, tree = parse_job_tree(TREE)
    runner.active[job.id] = ActiveJob(
        store.get(job.id), "127.0.0.1:1", 2, time.monotonic(), tree=tree
    )
    return runner, store, job.id


def test_sites_are_offered_their_edges_address_once_it_accepted(tmp_path: Path) -> None:
    runner, store, job = _runner(tmp_path, 30.0)
    active = runner.active[job]
    assert active.address_for("edge-1", "edge") == "127.0.0.1:1"  # the root
    assert active.address_for("edge-1", "worker") is None  # an edge's name, a site's role
    assert active.address_for("site-a", "worker") is None  # its edge has not accepted yet
    active.edges["edge-1"] = ("127.0.0.1:7001", time.monotonic())
    assert active.address_for("site-a", "worker") == "127.0.0.1:7001"
    assert active.address_for("site-c", "worker") is None
    assert active.address_for("site-x", "worker") is None  # not in the job
    assert active.address_for("site-a", "edge") is None
    store.close()
    runner.ledger.close()


def test_a_tree_job_fails_with_the_reason_of_its_missing_or_refusing_edge(tmp_path: Path) -> None:
    runner, store, job = _runner(tmp_path, 0.05)
    runner.seen("edge-2")  # connected, but as a site
    assert runner._too_few(job) is None  # within answer_timeout: pending
    time.sleep(0.06)
    assert runner._too_few(job) == (
        "edge edge-1 is not connected (no `murmura edge --standing` of that name asked for "
        "jobs) within [federation] answer_timeout = 0.05 s; a tree job needs every edge it names"
    )
    runner.active[job].edges["edge-1"] = ("127.0.0.1:7001", time.monotonic())
    assert "edge edge-2 asks for jobs as a site" in str(runner._too_few(job))
    store.answer(job, "edge-2", False, "max_rounds = 1 < the job's 2")
    assert runner._too_few(job) == "edge edge-2 refused: max_rounds = 1 < the job's 2"
    store.close()
    runner.ledger.close()


def test_a_standing_edge_is_not_a_pending_site_of_a_star_job(tmp_path: Path) -> None:
    runner, store, job = _runner(tmp_path, 30.0)
    runner.active[job].tree = None  # the same job as a star
    runner.seen("edge-1", "edge")  # never offered a star job: it will not answer
    runner.seen("site-a")
    store.answer(job, "site-a", False, "no")
    assert runner._too_few(job) == "too few sites accepted (0, needs 2): site-a refused: no"
    store.close()
    runner.ledger.close()


def test_too_few_sites_under_one_edge_fail_the_job(tmp_path: Path) -> None:
    runner, store, job = _runner(tmp_path, 30.0)
    active = runner.active[job]
    for edge in ("edge-1", "edge-2"):
        active.edges[edge] = (f"127.0.0.1:{edge[-1]}", time.monotonic())
        store.answer(job, edge, True, "")
    runner.seen("site-a")
    runner.seen("site-b")
    store.answer(job, "site-a", False, "task 'digits' is not allowed")
    assert runner._too_few(job) is None  # site-b may still accept
    store.answer(job, "site-b", True, "")
    assert runner._too_few(job) == (
        "too few sites accepted under edge edge-1 (1, needs 2): site-a refused: task 'digits' "
        "is not allowed"
    )
    store.close()
    runner.ledger.close()


def test_a_standing_edge_refuses_a_job_that_does_not_name_it_or_its_policy_refuses(
    tmp_path: Path,
) -> None:
    offer = {"id": "job-1", "config": TREE, "address": "127.0.0.1:1", "submitter": "bob"}
    edge = StandingEdge("127.0.0.1:1", "edge-3", None, state_dir=tmp_path)
    with pytest.raises(MurmuraError, match=r"job job-1 names no \[edge.edge-3\]"):
        edge._build("job-1", offer)
    (tmp_path / "policy.toml").write_text('[policy]\nallowed_submitters = ["alice"]\n')
    strict = StandingEdge(
        "127.0.0.1:1", "edge-1", None, policy=edge_policy(tmp_path / "policy.toml")
    )
    with pytest.raises(MurmuraError, match="edge edge-1 refuses the job: .*bob"):
        strict._build("job-1", offer)
    (tmp_path / "budget.toml").write_text("[policy]\nlifetime_epsilon = 5.0\n")
    with pytest.raises(ConfigError, match="lifetime_epsilon is a site's budget"):
        edge_policy(tmp_path / "budget.toml")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["edge", "--standing"], "--standing needs --server"),
        (["edge", "--standing", "--server", "127.0.0.1:1", "x.toml"], "a standing edge takes"),
        (["edge", "x.toml", "--port", "5", "--cert", "a"], "--cert, --port: only with --standing"),
        (["edge"], "give CONFIG"),
    ],
)
def test_the_edge_command_refuses_flags_that_would_be_ignored(args: list[str], reason: str) -> None:
    got = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert got.exit_code == 2 and reason in " ".join(got.output.split()), got.output
