"""The ``dvms`` command, the top layer: it talks to daemons only through
``dvms.runtime.client``, starts them, runs simulations and the placement engine.

``main.main`` is the entry point; each command group is one small module with
``register(subparsers)`` (``keygen``, ``node``, ``vm``, ``cluster``, ``debug``, ``sim``
with ``simrun``, ``solve``). The simulator and the placement engine are imported inside
the commands that run them, so that ``dvms --help`` stays fast.
"""
