"""A deployed coordinator tracked to MLflow registers its model with the ledger's lineage.

Coordinator + 2 worker processes over mTLS (``examples/deploy/run_local.py``) with
``[tracking] mlflow = true`` and ``register_as``: MLflow holds every line of the run's
``metrics.jsonl``; the registered version's lineage names the two workers and the ledger head,
and verifies against the coordinator's state dir (ledger signatures, head, last round's
weights), and not against a ledger rewritten to record another model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from portpool import free_port

from murmura.errors import LineageError
from murmura.ops.model_registry import verify
from murmura.ops.tracking import round_values, store_uri

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "deploy" / "run_local.py"
ROUNDS, WORKERS = 2, 2


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_local", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_deployed_run_is_tracked_and_registered_with_its_ledger(
    tmp_path: Path, mlflow_store: Path
) -> None:
    from mlflow import MlflowClient

    ex = _example()
    port = free_port()
    cfg_path = ex.write_setup(tmp_path, WORKERS, ROUNDS, port)
    (tmp_path / "state" / "runs").mkdir(parents=True)
    shutil.copyfile(mlflow_store, tmp_path / "state" / "runs" / "mlflow.db")  # set up already
    with open(cfg_path, "a") as fh:
        fh.write('\n[tracking]\nmlflow = true\nregister_as = "digits-deployed"\n')
    procs = ex.launch(tmp_path, cfg_path, WORKERS, port)
    try:
        assert procs[0].wait(240) == 0, (tmp_path / "coordinator.log").read_text()
        assert all(p.wait(30) == 0 for p in procs[1:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        ex.close_logs()
    state = tmp_path / "state"
    run_dir = ex.run_path(state)
    uri = store_uri(state / "runs")  # the run folder's parent
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2]
    mv = client.get_model_version("digits-deployed", "1")
    for key in ("participants", "train_loss", "test_accuracy"):
        got = sorted((m.step, m.value) for m in client.get_metric_history(mv.run_id, key))
        assert got == [(x["round"], round_values(x)[key]) for x in lines]
    assert client.get_run(mv.run_id).info.status == "FINISHED"

    lineage = verify("digits-deployed", "1", uri, state_dir=state).lineage
    assert lineage.nodes == ["worker-0", "worker-1"] and lineage.clients is None
    assert lineage.rounds == ROUNDS and lineage.run_id == run_dir.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert lineage.audit_head == summary["audit_head"] is not None
    card = (Path(mv.source.removeprefix("file://")) / "MODEL_CARD.md").read_text()
    assert "2 deployed sites (worker-0, worker-1)" in card
    assert f"murmura audit verify STATE_DIR --head {lineage.audit_head}" in card

    other = tmp_path / "other"  # the ledger rewritten to record another final model
    shutil.copytree(state, other)
    db = sqlite3.connect(other / "audit.sqlite")
    triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for (trigger,) in triggers:
        db.execute(f"DROP TRIGGER {trigger}")  # what a writer of the state dir can do
    seq, payload = db.execute(
        "SELECT seq, payload FROM ledger WHERE event = 'round_end' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    forged = payload.replace(lineage.model_sha256, "0" * 64)
    assert forged != payload
    db.execute("UPDATE ledger SET payload = ? WHERE seq = ?", (forged, seq))
    db.commit()
    db.close()
    with pytest.raises(LineageError, match=f"audit ledger record {seq}"):
        verify("digits-deployed", "1", uri, state_dir=other)
