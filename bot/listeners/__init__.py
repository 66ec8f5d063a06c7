"""Bolt listeners, one module per kind (Bolt's starter-template layout)."""
from . import actions, commands, messages, views


def register_listeners(app) -> None:
    commands.register(app)
    messages.register(app)
    actions.register(app)
    views.register(app)
