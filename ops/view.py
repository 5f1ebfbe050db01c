"""Placeholder until the ops view lands."""


def init_app(app):
    pass
