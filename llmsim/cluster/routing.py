"""Expert routing policies of a MoE step: which experts a step's tokens reach.

A MoE layer routes every token to ``k`` of its ``E`` routed experts (top-k of the router
logits). The expert kernel's time on an EP rank depends on how many (token, expert)
assignments land on the rank's experts and on how many distinct local experts they hit, so
routing decides the per-rank load and the slowest rank (:mod:`llmsim.cluster.moe_dp`).
llmsim has no router weights; a policy says how tokens pick experts:

* ``balanced`` (default): every expert equally likely and no draw, the expectation under
  uniform top-k routing (distinct experts hit ``E (1 - (1 - k/E)^T)``, each rank its share);
  what llmsim priced before routing policies existed, so outputs are unchanged;
* ``random``: each token draws ``k`` distinct experts uniformly at random (seeded);
* ``zipf``: each token draws ``k`` distinct experts with probability proportional to the
  expert's popularity ``p_e = (e + 1)^-s`` (expert id ``e``, exponent ``s``: expert 0 the
  most popular), a Zipf law, the shape AIConfigurator's MoE collector uses for its skewed
  ``power_law_<s>`` rows (``moe_perf.parquet``, ``distribution`` column);
* ``table``: as ``zipf`` with the popularity of each expert given in a CSV file
  (:func:`load_popularity`), e.g. measured expert loads.

Drawing ``k`` distinct experts with probabilities ``p`` is sequential weighted sampling
without replacement (Plackett-Luce), done for all tokens at once with the Gumbel-top-k
identity (Kool, van Hoof & Welling, ICML 2019: the ``k`` largest ``log p_e + G_e``, ``G``
i.i.d. standard Gumbel, are such a draw). Draws are deterministic: the generator of a step
is ``numpy.random.default_rng([seed, key])`` with ``key`` the lock-step group's step index
(or the step's token count where no group exists).

Assumption (said in docs/cluster-semantics.md): one draw per step is used for every MoE layer
of the model (vLLM routes each layer separately). The layer time is a maximum over ranks of
one layer's draw; with independent draws each layer's expected maximum is the same, so the
expected step time is the same, only its variance is smaller.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from llmsim.errors import ConfigError

__all__ = ["ExpertRouting", "RoutingPolicy", "load_popularity"]


class RoutingPolicy(StrEnum):
    """How a step's tokens pick their experts (module docstring)."""

    BALANCED = "balanced"
    RANDOM = "random"
    ZIPF = "zipf"
    TABLE = "table"


def load_popularity(path: str | Path, num_experts: int, *, field: str = "popularity_path"
                    ) -> tuple[float, ...]:
    """Per-expert popularity from a CSV file with header ``expert,popularity``.

    One row per expert id ``0 .. E-1`` (any order); popularity is a non-negative weight
    (normalised here), e.g. tokens routed to the expert in a measured run.

    Raises:
        ConfigError: unreadable file, a missing or extra column, a bad or repeated expert
            id, a negative or non-finite weight, experts missing, or fewer positive weights
            than ``top-k`` could ever need (file, line and field named).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the expert popularity table: {exc}", path=p,
                          field=field) from exc
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip() for c in rows[0]] != ["expert", "popularity"]:
        raise ConfigError("the header must be 'expert,popularity'", path=p, line=1,
                          field=field)
    weights: dict[int, float] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise ConfigError(f"expected 2 columns, got {len(row)}", path=p, line=line,
                              field=field)
        try:
            expert, weight = int(row[0]), float(row[1])
        except ValueError:
            raise ConfigError(f"not an integer expert id and a number: {row!r}", path=p,
                              line=line, field=field) from None
        if not 0 <= expert < num_experts:
            raise ConfigError(f"expert {expert} is not in 0..{num_experts - 1}", path=p,
                              line=line, field=field)
        if expert in weights:
            raise ConfigError(f"expert {expert} is listed twice", path=p, line=line,
                              field=field)
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"popularity must be a finite number >= 0, got {row[1]!r}",
                              path=p, line=line, field=field)
        weights[expert] = weight
    missing = [e for e in range(num_experts) if e not in weights]
    if missing:
        raise ConfigError(f"{len(missing)} of {num_experts} experts have no row (first: "
                          f"{missing[0]})", path=p, field=field)
    total = sum(weights.values())
    if total <= 0:
        raise ConfigError("every popularity is 0", path=p, field=field)
    return tuple(weights[e] / total for e in range(num_experts))


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpertRouting:
    """A routing policy, resolved for one model (defaults live in the experiment's
    ``moe_routing`` section, :class:`llmsim.experiment.MoeRoutingConfig`).

    Attributes:
        policy: the policy.
        seed: seed of the draws (``random``, ``zipf``, ``table``).
        zipf_exponent: ``s`` of the ``zipf`` policy (> 0), else unused.
        popularity: per-expert probabilities (sum 1) of the ``table`` policy, else empty.

    Raises:
        ConfigError: a ``zipf`` policy without a positive exponent, or a ``table`` policy
            without a popularity table.
    """

    policy: RoutingPolicy
    seed: int
    zipf_exponent: float | None
    popularity: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.policy is RoutingPolicy.ZIPF and not (
                self.zipf_exponent is not None and self.zipf_exponent > 0):
            raise ConfigError("the zipf policy needs zipf_exponent > 0",
                              field="moe_routing.zipf_exponent")
        if self.policy is RoutingPolicy.TABLE and not self.popularity:
            raise ConfigError("the table policy needs popularity_path",
                              field="moe_routing.popularity_path")

    @property
    def sampled(self) -> bool:
        """The policy draws experts per token (every policy but ``balanced``)."""
        return self.policy is not RoutingPolicy.BALANCED

    def probabilities(self, num_experts: int) -> NDArray[np.float64]:
        """``p_e`` per expert (sum 1), shape ``(E,)``.

        Raises:
            ConfigError: a popularity table of another expert count.
        """
        if self.policy is RoutingPolicy.ZIPF:
            exponent = float(self.zipf_exponent or 0.0)  # > 0, checked in __post_init__
            w = np.arange(1, num_experts + 1, dtype=np.float64) ** -exponent
        elif self.policy is RoutingPolicy.TABLE:
            if len(self.popularity) != num_experts:
                raise ConfigError(f"the popularity table has {len(self.popularity)} experts, "
                                  f"the model {num_experts}",
                                  field="moe_routing.popularity_path")
            w = np.asarray(self.popularity, dtype=np.float64)
        else:
            w = np.ones(num_experts, dtype=np.float64)
        out: NDArray[np.float64] = w / float(w.sum())
        return out

    def draw(self, tokens: int, num_experts: int, top_k: int, key: int
             ) -> NDArray[np.int64]:
        """(token, expert) assignments per expert of one step's ``tokens`` tokens.

        Args:
            tokens: tokens routed (>= 0).
            num_experts: ``E``.
            top_k: experts per token ``k`` (<= the experts with a positive probability).
            key: the step's key (see the module docstring).

        Returns:
            ``int64[E]``, assignments per expert; sums to ``tokens x k``.

        Raises:
            ConfigError: fewer experts with a positive probability than ``k``.
        """
        if tokens <= 0:
            return np.zeros(num_experts, dtype=np.int64)
        p = self.probabilities(num_experts)
        if int(np.count_nonzero(p)) < top_k:
            raise ConfigError(f"only {int(np.count_nonzero(p))} experts have a positive "
                              f"popularity, fewer than top-k = {top_k}",
                              field="moe_routing.popularity_path")
        rng = np.random.default_rng([self.seed, key])
        with np.errstate(divide="ignore"):
            logp = np.log(p)
        keys = rng.gumbel(size=(tokens, num_experts)) + logp
        if top_k < num_experts:
            picked = np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]
        else:
            picked = np.broadcast_to(np.arange(num_experts), (tokens, num_experts))
        return np.bincount(picked.ravel(), minlength=num_experts).astype(np.int64)
