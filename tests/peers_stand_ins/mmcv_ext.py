"""Stands in for ``mmcv._ext``, the compiled ops that mmcv-lite does not ship.

mmsegmentation's package imports ``mmcv.ops`` (which binds ``mmcv._ext``'s functions by name at import time), but
the EncNet forward calls none of them: each name resolves to a function that raises when called, so a forward
that did need a compiled op fails loudly instead of running something else.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name.startswith("__"):  # module protocol (__file__, __path__, ...): absent, as on a plain module
        raise AttributeError(name)

    def compiled_op(*args, **kwargs):
        raise RuntimeError(f"mmcv._ext.{name} is a compiled op; the peers tests run mmcv-lite, which has none")

    compiled_op.__name__ = name
    return compiled_op
