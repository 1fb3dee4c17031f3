"""Benchmarks behind ``crlib bench ...``: speed, memory and accuracy beside the reference tools.

Nothing in the product (stages, DAGs, registry) imports this package; it may import everything below
the CLI (see ``docs/architecture.md``).
"""
