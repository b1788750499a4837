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
