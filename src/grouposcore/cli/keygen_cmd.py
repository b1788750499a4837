"""``grouposcore keygen KEYFILE``: an EDHOC device identity, in the files aiocoap reads too.

Writes the P-256 private key as a COSE_Key ``{1: 2, -1: 1, -4: d}`` in CBOR to KEYFILE
(created 0600; an existing file is never overwritten, and a key file other users can read
is refused wherever it is used), and its credential ``{14: CCS}`` in CBOR diagnostic
notation to KEYFILE with ``.cred`` instead of ``.key`` (public: give it to the Group
Manager's operator for ``manager allow ... --cred``, or paste it into aiocoap's credentials
as ``own_cred`` / ``peer_cred``).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from grouposcore.edhoc.credentials import (
    EdhocKey,
    edn,
    write_credential_file,
    write_key_file,
)
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.edhoc_client import default_cred_path

__all__ = ["add_arguments", "run"]


def _kid(text: str) -> bytes:
    try:
        kid = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("kid must be hex, e.g. 01 or a1b2") from None
    if not kid:
        raise argparse.ArgumentTypeError("kid must not be empty")
    return kid


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEYFILE", help="where to write the private key (0600)")
    parser.add_argument(
        "--kid",
        type=_kid,
        metavar="HEX",
        help="key identifier peers refer to the credential by (default: 4 "
        "random bytes; unique per Group Manager)",
    )
    parser.add_argument(
        "--subject",
        metavar="NAME",
        default="",
        help="the credential's subject, e.g. the node's name",
    )
    parser.add_argument(
        "--cred-out",
        metavar="FILE",
        help="where to write the credential (default KEYFILE as .cred)",
    )


def run(args: argparse.Namespace) -> int:
    kid = args.kid if args.kid is not None else secrets.token_bytes(4)
    cred_path = args.cred_out or default_cred_path(args.key)
    try:
        key = EdhocKey.generate()
        credential = key.credential(kid, args.subject)
        write_key_file(args.key, key)
        write_credential_file(cred_path, credential)
    except GroupOscoreError as e:
        print(f"grouposcore keygen: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"grouposcore keygen: {e.strerror or e}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(
            json.dumps(
                {
                    "key": str(args.key),
                    "credential": str(cred_path),
                    "kid": kid.hex(),
                    "subject": args.subject,
                },
                sort_keys=True,
            )
        )
    elif not getattr(args, "quiet", False):
        print(f"key {args.key} (0600), credential {cred_path}, kid {kid.hex()}")
        print(edn({14: credential.ccs()}))
    return 0
