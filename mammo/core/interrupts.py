"""Ctrl-C that is never lost.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when SIGINT comes. Where
that is a finalizer (``__del__``, a weakref callback) Python can only print it, and a library's bare
``except:`` swallows it; the run would then go on to its end as if nothing had been asked. The
handler installed here also remembers the request, and training asks :func:`raise_if_requested`
at the points where stopping is clean: once the data is ready, before every training batch, and
before the closing report.
"""

from __future__ import annotations

import signal
from types import FrameType


class _Request:
    pending = False


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGINT's handler: remember the request, then raise ``KeyboardInterrupt`` as Python's own does."""
    _Request.pending = True
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT with :func:`on_sigint`, also where the process was started with it ignored (a
    background job of a script inherits that), with no request pending."""
    _Request.pending = False
    signal.signal(signal.SIGINT, on_sigint)


def raise_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C came since :func:`install` and its exception was lost."""
    if _Request.pending:
        raise KeyboardInterrupt
