"""Every registered strategy passes the ``StrategyContract``; one class per strategy."""

from acquisition_contracts import StrategyContract

import acquisition
from acquisition.cost_aware import CostAwareStrategy
from acquisition.disagreement import DisagreementStrategy
from acquisition.discovery import DiscoveryStrategy
from acquisition.dose_grid import DoseGridStrategy
from acquisition.eig import EIGStrategy
from acquisition.fisher import FisherStrategy
from acquisition.nipv import NIPVStrategy
from acquisition.random_design import RandomStrategy
from acquisition.sobol import SobolStrategy
from acquisition.uncertainty import UncertaintyStrategy

POOL = 400


class TestRandom(StrategyContract):
    def make(self, time_limit_s=5.0):
        return RandomStrategy(time_limit_s)


class TestSobol(StrategyContract):
    def make(self, time_limit_s=5.0):
        return SobolStrategy(time_limit_s)


class TestDoseGrid(StrategyContract):
    def make(self, time_limit_s=5.0):
        return DoseGridStrategy(time_limit_s)

    def cheapest_cost(self, space):
        return space.assay("scrna").cost  # scRNA only, by design


class TestUncertainty(StrategyContract):
    def make(self, time_limit_s=5.0):
        return UncertaintyStrategy(time_limit_s, pool_size=POOL)


class TestDisagreement(StrategyContract):
    def make(self, time_limit_s=5.0):
        return DisagreementStrategy(time_limit_s, pool_size=POOL)


class TestEIG(StrategyContract):
    def make(self, time_limit_s=5.0):
        return EIGStrategy(time_limit_s, pool_size=POOL)


class TestFisher(StrategyContract):
    """The contract's analytic ensemble has no intervention operator: this checks the readout-EIG fallback.

    The parameter posterior itself is checked on real member networks in ``test_fisher.py`` and through
    the whole loop in ``tests/loop/test_study.py``.
    """

    def make(self, time_limit_s=5.0):
        return FisherStrategy(time_limit_s, pool_size=POOL)


class TestNIPV(StrategyContract):
    def make(self, time_limit_s=2.0):
        return NIPVStrategy(time_limit_s, pool_size=POOL, n_train=64, mc_points=64)


class TestDiscovery(StrategyContract):
    def make(self, time_limit_s=5.0):
        return DiscoveryStrategy(time_limit_s, pool_size=POOL, n_samples=16)


class TestCostAware(StrategyContract):
    def make(self, time_limit_s=5.0):
        return CostAwareStrategy("eig", time_limit_s, pool_size=POOL)


def test_every_registered_strategy_has_a_contract_class():
    tested = {cls().make().registry_name for cls in StrategyContract.__subclasses__()}
    assert tested == set(acquisition.STRATEGIES.names)
