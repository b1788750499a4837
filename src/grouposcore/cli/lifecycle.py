"""What the long-running commands (serve, manager serve, push, receive) share: stopping
cleanly, and one mapping from how they end to an exit status."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from grouposcore.errors import GroupOscoreError, RequestTimeout, UsageError

#: exit statuses: a usage or configuration error, a timeout (where a command tells it
#: apart), any other failure, Ctrl-C
EXIT_USAGE, EXIT_TIMEOUT, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 3, 1, 130


def run_command(
    name: str,
    main: Coroutine[Any, Any, int],
    *,
    usage: tuple[type[BaseException], ...] = (UsageError,),
    timeout_status: int | None = None,
) -> int:
    """Run a command's coroutine to its exit status. ``usage`` errors exit 2; a
    :class:`RequestTimeout` exits ``timeout_status`` if given; any other library or OS
    error exits 1; each is said on stderr as ``grouposcore NAME: ...``. Ctrl-C exits 130."""
    try:
        return asyncio.run(main)
    except usage as exc:
        return _said(name, str(exc), EXIT_USAGE)
    except RequestTimeout as exc:
        if timeout_status is None:
            return _said(name, str(exc), EXIT_FAILURE)
        return _said(name, f"timeout: {exc}", timeout_status)
    except (GroupOscoreError, OSError) as exc:
        return _said(name, str(exc), EXIT_FAILURE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _said(name: str, message: str, status: int) -> int:
    print(f"grouposcore {name}: {message}", file=sys.stderr)
    return status


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM, so a server closes its sockets and store before
    it exits (where the loop cannot take signal handlers, Ctrl-C still raises)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop
