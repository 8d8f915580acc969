import pytest

from experiment_design import Context, DesignSpace, Target


@pytest.fixture
def space() -> DesignSpace:
    targets = [Target(f"CMP{i:02d}", "compound") for i in range(4)]
    targets += [Target(f"KD{i:02d}", "knockdown") for i in range(3)]
    targets += [Target("ACT00", "activation")]
    contexts = [Context(line, site) for line in ("L0", "L1") for site in ("S0", "S1")]
    return DesignSpace(targets=tuple(targets), contexts=tuple(contexts))
