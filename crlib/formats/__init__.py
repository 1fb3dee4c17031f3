"""File formats and conventions shared by every stage: calibrated exposures, DQ bits, prediction files.

Leaf modules: they import nothing of crlib above :mod:`crlib.errors`, :mod:`crlib.profiles` and
:mod:`crlib.float16`.
"""
