"""Firmware push: one image to every member of a Group OSCORE group, described by a SUIT
manifest its author signed.

:mod:`~grouposcore.push.suit` signs and verifies the manifests (and the block hash tree);
:mod:`~grouposcore.push.messages` holds the message formats,
:mod:`~grouposcore.push.protocol` the sans-I/O sender and receiver;
:mod:`~grouposcore.push.runner` carries them over transport endpoints, and
:mod:`~grouposcore.push.relay` is a lossy multicast fan-out for tests and demos.
"""

from grouposcore.push.messages import Report, ReportState, decode
from grouposcore.push.protocol import (
    MemberProgress,
    MemberState,
    PushReceiver,
    PushSender,
)
from grouposcore.push.suit import Manifest, parse_envelope, sign_envelope

__all__ = [
    "Manifest",
    "MemberProgress",
    "MemberState",
    "PushReceiver",
    "PushSender",
    "Report",
    "ReportState",
    "decode",
    "parse_envelope",
    "sign_envelope",
]
