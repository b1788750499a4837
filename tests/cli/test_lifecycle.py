"""One mapping from how a long-running command ends to its exit status (push, receive,
serve): what each kind of failure prints and returns."""

from __future__ import annotations

import pytest

from grouposcore.cli.lifecycle import run_command
from grouposcore.errors import ConfigError, ProtectionError, RequestTimeout, UsageError


async def _ends(exc: BaseException | None) -> int:
    if exc is not None:
        raise exc
    return 0


@pytest.mark.parametrize(
    ("exc", "kwargs", "status", "said"),
    [
        (None, {}, 0, ""),
        (UsageError("--security FILE is required"), {}, 2, "--security FILE is required"),
        (ConfigError("bad file"), {}, 1, "bad file"),
        (ConfigError("bad file"), {"usage": (ConfigError, UsageError)}, 2, "bad file"),
        (RequestTimeout("no answer"), {}, 1, "no answer"),
        (RequestTimeout("no answer"), {"timeout_status": 3}, 3, "timeout: no answer"),
        (ProtectionError("forged"), {}, 1, "forged"),
        (OSError("address in use"), {}, 1, "address in use"),
        (KeyboardInterrupt(), {}, 130, ""),
    ],
)
def test_exit_status_and_message_per_failure(
    exc: BaseException | None,
    kwargs: dict[str, object],
    status: int,
    said: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_command("push", _ends(exc), **kwargs) == status  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err == (f"grouposcore push: {said}\n" if said else "")


def test_anything_else_is_a_bug_and_not_hidden() -> None:
    with pytest.raises(ZeroDivisionError):
        run_command("push", _ends(ZeroDivisionError()))
