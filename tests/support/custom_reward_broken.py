"""A user's reward module with a bug that shows when it is imported (named by the config as a reward's module)."""

raise RuntimeError("the reward module's own bug")
