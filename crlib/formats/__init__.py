"""File formats and conventions shared by every stage: DQ bits and prediction files.

Leaf modules: they import nothing of crlib above :mod:`crlib.errors` and :mod:`crlib.float16`.
"""
