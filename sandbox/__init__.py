"""Simulators for the demo and the tests; never imported by the product.

- ``sandbox.providers``: the two demo provider systems the demo config targets
  (``demo_rest``: a JSON API, ``demo_soap``: the SOAP service in ``wsdl/``), the
  ``serve_in_thread`` helper for tests and ``python -m sandbox.providers`` for the demo.
- ``sandbox.state``: what a demo provider received, its idempotency and the failure
  injection behind ``/_control``, ``/_received`` and ``/_reset``.
- ``sandbox.clinic``: the demo clinic that answers the cases a demo provider received
  (``sandbox.answers``: what it says; ``sandbox.push``: demo_rest's push to the gateway).

May import anything (the product's modules included); nothing in the product imports it.
"""
