"""Co-location latency model: the p99 of a replica that shares its socket with others.

A service's curve (``model.latency.LatencyCurve``) is measured with the replica alone on a
socket: p99(x) and the socket's utilisation u(x) at per-replica load x (req/s), saturating
at mu (req/s). Read the replica as a queue whose own server utilisation is rho = x / mu.

On a shared socket the other replicas keep U_o of the socket busy (the sum of their own
u(x) from their own curves). The scheduler spreads their work over the socket's cores, so
the replica's server finds its CPU taken U_o of the time: its server is busy rho + U_o of
the time, and its requests queue as they would alone at that utilisation. The replica at
load x therefore behaves as the same replica alone at the load x' with x' / mu = rho + U_o:

    p99_shared(x, U_o) = p99(x + U_o * mu)          (inf once x / mu + U_o >= 1)

Derivation: for a processor-sharing CPU serving several classes, each class's response time
depends only on its own demand and the server's total utilisation (M/M/1-PS: T_i = D_i /
(1 - U)); the curve, read at the utilisation the socket now has, gives the shared latency.
For a replica that can use the whole socket (u(mu) = 1) rho + U_o is the socket's total
utilisation exactly. A replica that saturates below a full socket (u(mu) < 1: I/O waits or
few threads, e.g. the calibrated databases at 0.5) counts its own load against its own
capacity and the others' against the socket, i.e. the others' work is spread evenly over the
cores rather than stacked on the replica's own.

Properties (tests/unit/model/test_colocation.py): alone (U_o = 0) it is the single-service
curve; it never falls as x or U_o rises. CPU limits are not modelled as caps: a replica's
share is its reservation (for packing), and its latency is what the shared socket gives it.

Pure and vectorised: loads and utilisations are numpy arrays (one entry per step).
"""

from __future__ import annotations

import numpy as np

from ecoscale.model.latency import LatencyCurve


def equivalent_load_qps(
    curve: LatencyCurve, load_qps: np.ndarray | float, others_utilisation: np.ndarray | float
) -> np.ndarray:
    """The load (req/s) at which the replica alone would queue as it does at ``load_qps``
    (req/s) beside replicas that keep ``others_utilisation`` (0..1) of its socket busy."""
    others = np.clip(np.asarray(others_utilisation, dtype=float), 0.0, None)
    return np.asarray(load_qps, dtype=float) + others * curve.saturation_qps


def shared_p99(
    curve: LatencyCurve, load_qps: np.ndarray | float, others_utilisation: np.ndarray | float
) -> np.ndarray:
    """p99 (ms) of one replica at per-replica load ``load_qps`` (req/s) on a socket whose
    other replicas use ``others_utilisation`` (0..1) of it; inf at saturation."""
    return curve.p99(equivalent_load_qps(curve, load_qps, others_utilisation))


def shared_p99_at(curve: LatencyCurve, load_qps: float, others_utilisation: float) -> float:
    """``shared_p99`` for one load, without numpy overhead (ms)."""
    return curve.p99_at(load_qps + max(others_utilisation, 0.0) * curve.saturation_qps)
