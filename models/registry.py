"""Name → model class table; a new model is one file plus `@register("name")`."""

from experiment_design.registry import Registry

MODELS = Registry("model", package="models")
register = MODELS.register
get = MODELS.get
