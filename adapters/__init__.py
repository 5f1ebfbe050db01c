"""Adapters: everything that opens an outbound connection.

Role: one adapter per kind of target system behind a small registry; provider systems
(``rest``, ``soap``) and the national platform (``national``). Only the worker calls them.

May import: ``rivta``, ``model``, ``errors``. Never the store, never Flask.
"""
