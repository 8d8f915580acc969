"""Name → oracle class table; a new oracle is one file plus `@register("name")`."""

from experiment_design.registry import Registry

ORACLES = Registry("oracle", package="simulators")
register = ORACLES.register
get = ORACLES.get
