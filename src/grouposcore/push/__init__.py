"""Firmware push: one file to every member of a Group OSCORE group.

:mod:`~grouposcore.push.protocol` holds the message formats and the sans-I/O sender and
receiver; :mod:`~grouposcore.push.runner` carries them over transport endpoints, and
:mod:`~grouposcore.push.relay` is a lossy multicast fan-out for tests and demos.
"""

from grouposcore.push.protocol import (
    MemberProgress,
    PushReceiver,
    PushSender,
    Report,
    decode,
)

__all__ = ["MemberProgress", "PushReceiver", "PushSender", "Report", "decode"]
