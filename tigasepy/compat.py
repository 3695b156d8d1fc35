"""The one place wokkel is imported from (ARCHITECTURE.md section 6).

wokkel 18.0.0 imports names that current Twisted removed
(``twisted.python.compat._PY3``, ``StringType``, ``iteritems``, ``itervalues`` and
the module ``twisted.python.constants``, now the ``constantly`` package). They are
provided here, once, before any wokkel module is imported; import wokkel modules
only through this one::

    from tigasepy.compat import data_form
"""

from __future__ import annotations

import sys
import warnings

import twisted.python.compat as _twisted_compat


_REPLACEMENTS = {
    "_PY3": True,
    "StringType": str,
    "iteritems": lambda d: iter(d.items()),
    "itervalues": lambda d: iter(d.values()),
    "unicode": str,
}


def _provide_removed_twisted_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # hasattr reads deprecated aliases
        for name, value in _REPLACEMENTS.items():
            if not hasattr(_twisted_compat, name):
                setattr(_twisted_compat, name, value)
    if "twisted.python.constants" not in sys.modules:
        try:
            import twisted.python.constants  # noqa: F401
        except ImportError:
            import constantly

            sys.modules["twisted.python.constants"] = constantly


_provide_removed_twisted_names()

with warnings.catch_warnings():
    # wokkel reads deprecated aliases (``unicode``, ``iteritems``): nothing to act on here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from wokkel import data_form


def _rebind(module: object) -> None:
    """Point a wokkel module's copies of the deprecated Twisted aliases at plain equivalents,
    so that calling them warns nothing."""
    for name, value in _REPLACEMENTS.items():
        if name in vars(module):
            setattr(module, name, value)


_rebind(data_form)

__all__ = ["data_form"]
