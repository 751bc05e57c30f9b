"""SCAFFOLD (Karimireddy et al. 2020): control variates that correct client drift.

The server keeps ``c``; client ``i`` keeps ``c_i`` (zero at first) across rounds. A client
takes ``K`` local steps ``y <- y - lr * (g(y) - c_i + c)`` from the global ``x``, then sets
(option II) ``c_i+ = c_i - c + (x - y) / (K * lr)``. The server applies the aggregated delta
and ``c <- c + (1/N) * sum_{i in S} (c_i+ - c_i)`` over the ``N`` registered nodes.

How ``c`` and ``delta c_i`` travel, so that this works over the wire unchanged:

- down: ``FitIns.config["scaffold_c"]`` holds ``c`` as base64 of little-endian float32
  (``encode_vector``); no runtime or transport change is needed. It costs about 1.33x the
  model's bytes per round, like the paper's doubled download. Over gRPC the config rides in
  the instruction header, one message under the 4 MiB default limit, so this carries models
  up to about 780k parameters; larger ones need ``c`` streamed in chunks like the weights.
- up: nothing extra. Under option II, ``c_i+ - c_i = -c - delta_i / (K_i * lr)``, which the
  server computes from the delta it already receives and the two scalars the client reports
  in its metrics (``scaffold_steps`` = K_i, ``scaffold_lr`` = lr). So the strategy keeps
  every row (``keep_rows``) to weigh each delta by its own ``1 / K_i``.

In simulation the client state lives in ``ScaffoldClient``, which wraps a ``TorchClient``;
the builder wraps clients through ``Scaffold.wrap_client``. Local training is plain SGD
(weight decay allowed): option II's ``(x - y) / (K lr)`` assumes it, so momentum and a
proximal term are refused.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from murmura.aggregate.base import Aggregator, Matrix
from murmura.aggregate.buffer import UpdateBuffer
from murmura.client import Client, LocalSGD, TorchClient
from murmura.errors import ConfigError, ProtocolError
from murmura.seeding import client_generator
from murmura.strategy.fedavg import EvaluateFn, FedAvg, fixed_lr_factory
from murmura.types import EvaluateRes, Failure, FitIns, FitRes, Scalar, Vector

log = logging.getLogger(__name__)
CONFIG_KEY = "scaffold_c"
STATE_KIND = "scaffold"


def encode_vector(v: Vector) -> str:
    """A float32 vector as base64 of its little-endian bytes (a config-safe string)."""
    return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dim: int) -> Vector:
    """The inverse of ``encode_vector``; wrong length or non-finite values are refused."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ProtocolError(f"{CONFIG_KEY}: not valid base64: {exc}") from None
    if len(raw) != 4 * dim:
        raise ProtocolError(f"{CONFIG_KEY}: {len(raw)} bytes, expected {4 * dim} ({dim} floats)")
    v = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(v).all():
        raise ProtocolError(f"{CONFIG_KEY}: control variate has non-finite values")
    return v


def client_variate_step(c_i: Vector, c: Vector, delta: Vector, steps: int, lr: float) -> Vector:
    """Option II: ``c_i+ = c_i - c + (x - y) / (K lr)`` with ``delta = y - x``."""
    return (c_i - c - delta / np.float32(steps * lr)).astype(np.float32)


def server_variate_step(
    c: Vector, deltas: Matrix, steps: Sequence[float], lrs: Sequence[float], num_nodes: int
) -> Vector:
    """``c + (1/N) sum_i (c_i+ - c_i)`` with ``c_i+ - c_i = -c - delta_i / (K_i lr_i)``."""
    scale = 1.0 / (np.asarray(steps, np.float64) * np.asarray(lrs, np.float64))
    drift = scale @ np.asarray(deltas, np.float64)  # sum_i delta_i / (K_i lr_i)
    total = -len(steps) * c.astype(np.float64) - drift
    return (c + total / num_nodes).astype(np.float32)


class Scaffold(FedAvg):
    """SCAFFOLD's server: FedAvg rounds plus the server control variate ``c``."""

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_clients: int = 1,
        aggregator: Aggregator | None = None,
        server_lr: float = 1.0,
        seed: int = 0,
        evaluate_fn: EvaluateFn | None = None,
        fraction_evaluate: float = 0.0,
        min_evaluate_clients: int = 1,
    ) -> None:
        super().__init__(
            fraction=fraction,
            min_clients=min_clients,
            aggregator=aggregator,
            server_lr=server_lr,
            seed=seed,
            evaluate_fn=evaluate_fn,
            fraction_evaluate=fraction_evaluate,
            min_evaluate_clients=min_evaluate_clients,
        )
        self.c: Vector | None = None
        self.num_nodes = 0

    @property
    def keep_rows(self) -> bool:
        """Each delta is weighed by its own ``1 / (K_i lr)`` for ``c``, so rows are kept."""
        return True

    def linear_refusal(self) -> str | None:
        """SCAFFOLD's server variate needs each client's own correction, not only the sum."""
        return "SCAFFOLD's control variates need each client's correction, not only the sum"

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """FedAvg's sample; remembers ``N``, the number of registered nodes."""
        self.num_nodes = len(nodes)
        return super().sample(round_, nodes)

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """Send ``c`` with the model (zero before the first round)."""
        if self.c is None or self.c.shape != weights.shape:
            self.c = np.zeros_like(weights, dtype=np.float32)
        return {CONFIG_KEY: encode_vector(self.c)}

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Apply the aggregated delta and move ``c`` by the clients' variate changes."""
        if len(updates) < self.min_clients:
            log.warning("round %d: %d results < min_clients; model unchanged", round_, len(updates))
            return None
        c = self.c if self.c is not None else np.zeros_like(weights)
        try:
            steps = [float(m["scaffold_steps"]) for m in updates.metrics]
            lrs = [float(m["scaffold_lr"]) for m in updates.metrics]
        except KeyError as exc:
            raise ConfigError(
                f"SCAFFOLD needs ScaffoldClient results; metric {exc} missing"
            ) from None
        self.c = server_variate_step(c, updates.rows(), steps, lrs, max(self.num_nodes, 1))
        return self.server_update(weights, self.combine(updates))

    def wrap_client(self, client: Client) -> Client:
        """In simulation, give each ``TorchClient`` its own control variate."""
        if not isinstance(client, TorchClient):
            raise ConfigError(f"SCAFFOLD wraps TorchClient, got {type(client).__name__}")
        return ScaffoldClient(client)

    def state_dict(self) -> dict[str, object]:
        """The server control variate."""
        return {"kind": STATE_KIND, "c": None if self.c is None else self.c.copy()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore ``c``; a state of another kind is refused."""
        if state.get("kind") != STATE_KIND:
            raise ConfigError(f"state is of kind {state.get('kind')!r}, expected {STATE_KIND!r}")
        c = state.get("c")
        self.c = None if c is None else np.array(c, dtype=np.float32)


scaffold = fixed_lr_factory(Scaffold)  # registered as "scaffold"


class ScaffoldClient:
    """A ``TorchClient`` with its own control variate ``c_i``, kept across rounds."""

    def __init__(self, inner: TorchClient) -> None:
        self.inner = inner
        self.node_id = inner.node_id
        self.c_i: Vector | None = None

    def fit(self, ins: FitIns) -> FitRes:
        """K corrected SGD steps from the global model, then option II's ``c_i`` update."""
        inner, dim = self.inner, ins.weights.size
        hp = _hyper_parameters(inner.hp, ins.config)
        c = decode_vector(str(ins.config.get(CONFIG_KEY, "")), dim)
        c_i = self.c_i if self.c_i is not None else np.zeros(dim, np.float32)
        x, y = inner.data.client_train(inner.cid)
        global_w = torch.from_numpy(np.asarray(ins.weights, dtype=np.float32))
        inner.model.flat.copy_(global_w)
        gen = client_generator(inner.seed, ins.round, inner.cid)
        loss, steps = _corrected_sgd(inner, x, y, hp, torch.from_numpy(c - c_i), gen)
        delta = (inner.model.flat - global_w).numpy().copy()
        self.c_i = client_variate_step(c_i, c, delta, steps, hp.lr)
        metrics = {"train_loss": loss, "scaffold_steps": float(steps), "scaffold_lr": hp.lr}
        return FitRes(update=delta, num_examples=len(x), metrics=metrics)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """The wrapped client's evaluation."""
        return self.inner.evaluate(weights)

    def state_dict(self) -> dict[str, object]:
        """The client control variate ``c_i``, kept across rounds (a resumed simulation)."""
        return {"kind": "scaffold_client", "c_i": None if self.c_i is None else self.c_i.copy()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore ``c_i``; a state of another kind is refused."""
        if state.get("kind") != "scaffold_client":
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected 'scaffold_client'")
        c_i = state.get("c_i")
        self.c_i = None if c_i is None else np.array(c_i, dtype=np.float32)


def _hyper_parameters(hp: LocalSGD, config: Mapping[str, Scalar]) -> LocalSGD:
    """Local hyper-parameters with the server's overrides; refuses what option II cannot use."""
    fields = LocalSGD.__dataclass_fields__
    known = {k: v for k, v in config.items() if k in fields}
    out = LocalSGD(**{**{f: getattr(hp, f) for f in fields}, **known})
    if out.momentum or out.proximal_mu:
        raise ConfigError("SCAFFOLD local training is plain SGD: set momentum = proximal_mu = 0")
    return out


def _corrected_sgd(
    client: TorchClient,
    x: torch.Tensor,
    y: torch.Tensor,
    hp: LocalSGD,
    correction: torch.Tensor,
    gen: torch.Generator,
) -> tuple[float, int]:
    """Minibatch SGD on ``g + correction``; returns the mean loss and the number of steps."""
    model, task = client.model, client.task
    loss_sum, steps = 0.0, 0
    for _ in range(hp.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), hp.batch_size):
            idx = perm[i : i + hp.batch_size]
            model.grad.zero_()
            loss = task.loss(model.module(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                model.grad.add_(correction)
                if hp.weight_decay:
                    model.grad.add_(model.flat, alpha=hp.weight_decay)
                model.flat.add_(model.grad, alpha=-hp.lr)
            loss_sum += loss.item()
            steps += 1
    return loss_sum / max(steps, 1), steps
