"""The causal program graph: a sparse DAG, its path weights and path delays.

Propagation is linear: a direct input ``u_m`` on program ``m`` moves program
``k`` by ``P[m, k] · u_m`` at steady state, with ``P = Σ_paths Π weights``
(``P[k, k] = 1``). Each source → destination pair gets one effective delay
``D[m, k]``, the |weight|-weighted mean of its path delays, so downstream
programs respond later than their ancestors.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np


@dataclass(frozen=True)
class ProgramGraph:
    """A DAG over ``K`` programs with its propagation matrices.

    Attributes:
        edges: ``(n_edges, 4)`` rows ``(parent, child, weight, delay_h)``.
        propagation: ``(K, K)`` total path weight ``P[m, k]`` from ``m`` to ``k``
            (identity on the diagonal, 0 where ``k`` is not reachable).
        delay_h: ``(K, K)`` effective delay from ``m`` to ``k``, hours (0 on the
            diagonal and where unreachable).

    """

    edges: np.ndarray
    propagation: np.ndarray
    delay_h: np.ndarray

    @property
    def n_programs(self) -> int:
        """Number of programs ``K``."""
        return self.propagation.shape[0]

    def to_networkx(self) -> nx.DiGraph:
        """The DAG as a ``networkx.DiGraph`` with ``weight`` and ``delay_h`` edge attributes."""
        g = nx.DiGraph()
        g.add_nodes_from(range(self.n_programs))
        for p, c, w, d in self.edges:
            g.add_edge(int(p), int(c), weight=float(w), delay_h=float(d))
        return g


def draw_graph(n_programs: int, rng: np.random.Generator, mean_parents: float = 1.2) -> ProgramGraph:
    """Draw a sparse random DAG and its propagation matrices.

    Args:
        n_programs: ``K``.
        rng: Source of randomness.
        mean_parents: Expected in-degree of a program.

    Returns:
        The graph; edge weights are ``±U[0.4, 0.8]``, delays ``U[1, 4]`` h.

    """
    k = n_programs
    order = rng.permutation(k)
    p_edge = min(1.0, 2.0 * mean_parents / max(k - 1, 1))
    rows = []
    for i in range(k):
        for j in range(i + 1, k):
            if rng.uniform() < p_edge:
                w = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 0.8)
                rows.append((order[i], order[j], w, rng.uniform(1.0, 4.0)))
    edges = np.asarray(rows, dtype=float).reshape(-1, 4)
    prop, delay = propagate(edges, k)
    return ProgramGraph(edges, prop, delay)


def propagate(edges: np.ndarray, n_programs: int) -> tuple[np.ndarray, np.ndarray]:
    """Path weights and |weight|-weighted mean path delays of a DAG.

    Args:
        edges: ``(n_edges, 4)`` rows ``(parent, child, weight, delay_h)``.
        n_programs: ``K``.

    Returns:
        ``P`` ``(K, K)`` and ``D`` ``(K, K)`` as in :class:`ProgramGraph`.

    """
    g = nx.DiGraph()
    g.add_nodes_from(range(n_programs))
    for p, c, w, d in edges:
        g.add_edge(int(p), int(c), weight=float(w), delay_h=float(d))
    topo = list(nx.topological_sort(g))
    w_sum = np.eye(n_programs)  # Σ Π w over paths m → k
    w_abs = np.eye(n_programs)  # Σ Π |w|
    wd = np.zeros((n_programs, n_programs))  # Σ Π |w| · path delay
    for node in topo:
        for parent in g.predecessors(node):
            e = g.edges[parent, node]
            w, d = e["weight"], e["delay_h"]
            w_sum[:, node] += w_sum[:, parent] * w
            w_abs[:, node] += w_abs[:, parent] * abs(w)
            wd[:, node] += (wd[:, parent] + w_abs[:, parent] * d) * abs(w)
    delay = np.divide(wd, w_abs, out=np.zeros_like(wd), where=w_abs > 0)
    np.fill_diagonal(delay, 0.0)
    return w_sum, delay
