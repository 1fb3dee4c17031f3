"""Pipeline stages as the DAGs and the CLI call them: one function per task, ids in, ids out.

Each stage reads what earlier stages left in the run ledger (:mod:`crlib.pipeline.ledger`) and the
results database, does one piece of work through the stage packages (archive, screening, align,
truth, model, metrics), records its results idempotently, and returns an id for XCom.
"""
