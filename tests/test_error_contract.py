"""The error -> wire contract has one of each thing: one Code enum, one UsageError, every
exception class in grouposcore.errors, and the binding an error is answered with declared."""

from __future__ import annotations

import grouposcore.cli.client as cli_client
import grouposcore.cli.push_cmd as cli_push
import grouposcore.oscore.config as oscore_config
from grouposcore import errors
from grouposcore.coap import Code
from grouposcore.manager import params


def test_manager_code_is_the_coap_code_enum() -> None:
    assert params.Code is Code
    assert f"{params.Code.NOT_FOUND:d}" == "132"


def test_usage_error_is_one_class_outside_the_protocol_hierarchy() -> None:
    assert cli_client.UsageError is errors.UsageError
    assert cli_push.UsageError is errors.UsageError
    assert not issubclass(errors.UsageError, errors.GroupOscoreError)


def test_config_error_lives_in_errors_and_stays_importable_from_config() -> None:
    assert oscore_config.ConfigError is errors.ConfigError
    assert issubclass(errors.ConfigError, errors.GroupOscoreError)


def test_every_oscore_error_declares_the_binding_it_is_answered_with() -> None:
    assert errors.ReplayError("replayed").binding is None
    binding = object()
    err = errors.FreshnessRequired("no window", binding, b"\x01")
    assert err.binding is binding
    assert err.echo == b"\x01"


def test_every_exception_code_is_a_code_or_none() -> None:
    import inspect

    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, BaseException) and c.__module__ == errors.__name__
    ]
    with_code = [c for c in classes if hasattr(c, "coap_code")]
    assert errors.OscoreError in with_code and len(with_code) >= 10
    for cls in with_code:
        code = cls.coap_code
        assert code is None or type(code) is Code, (cls.__name__, code)
    assert errors.GroupManagerRequestError("x").code is Code.BAD_REQUEST
    assert errors.GroupManagerRequestError("x", code=132).code is Code.NOT_FOUND
    from grouposcore.manager.responses import forbidden, reject

    assert type(reject("x").code) is Code and forbidden("x").code is Code.FORBIDDEN


def test_an_unregistered_code_from_the_group_manager_is_kept_as_sent() -> None:
    from grouposcore.manager.member import parse_error

    assert parse_error(4 << 5 | 31, b"", None).code == 4 << 5 | 31
    assert parse_error(132, b"", None).code is Code.NOT_FOUND


def test_code_is_one_class_from_the_leaf_module() -> None:
    import grouposcore._coapcode as leaf
    from grouposcore.coap import codes

    assert leaf.Code is Code is codes.Code is errors.Code
    assert str(Code.CONTENT) == "2.05 Content" and codes.code_name(69) == "2.05 Content"
