"""Name → strategy class table; a new strategy is one file plus `@register("name")`."""

from experiment_design.registry import Registry

STRATEGIES = Registry("strategy", package="acquisition")
register = STRATEGIES.register
get = STRATEGIES.get
