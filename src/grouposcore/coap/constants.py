"""RFC 7252 protocol constants, well-known ports and addresses, Content-Format numbers.

The derived times follow RFC 7252 §4.8.2 from the base parameters, so changing a base value
here keeps the derived ones consistent.
"""

from __future__ import annotations

# --- Transmission parameters (RFC 7252 §4.8) -------------------------------------------
ACK_TIMEOUT = 2.0  # seconds
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
NSTART = 1
DEFAULT_LEISURE = 5.0  # seconds
PROBING_RATE = 1.0  # bytes per second

# --- Derived time values (RFC 7252 §4.8.2) ---------------------------------------------
MAX_TRANSMIT_SPAN = ACK_TIMEOUT * ((2**MAX_RETRANSMIT) - 1) * ACK_RANDOM_FACTOR  # 45 s
MAX_TRANSMIT_WAIT = ACK_TIMEOUT * ((2 ** (MAX_RETRANSMIT + 1)) - 1) * ACK_RANDOM_FACTOR  # 93 s
MAX_LATENCY = 100.0  # seconds
PROCESSING_DELAY = ACK_TIMEOUT  # 2 s
MAX_RTT = 2 * MAX_LATENCY + PROCESSING_DELAY  # 202 s
EXCHANGE_LIFETIME = MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY  # 247 s
NON_LIFETIME = MAX_TRANSMIT_SPAN + MAX_LATENCY  # 145 s

# --- Message size (RFC 7252 §4.6): fits an IPv6 minimum-MTU datagram ------------------
MAX_MESSAGE_SIZE = 1152
MAX_PAYLOAD_SIZE = 1024

# --- Ports and multicast addresses (RFC 7252 §6.1, §6.2, §12.8) -------------------------
COAP_PORT = 5683
COAPS_PORT = 5684
ALL_COAP_NODES_V4 = "224.0.1.187"
ALL_COAP_NODES_V6_LINK = "ff02::fd"
ALL_COAP_NODES_V6_SITE = "ff05::fd"

# --- Content-Format numbers (CoAP Content-Formats registry) -----------------------------
TEXT_PLAIN = 0
LINK_FORMAT = 40
XML = 41
OCTET_STREAM = 42
EXI = 47
JSON = 50
JSON_PATCH_JSON = 51
MERGE_PATCH_JSON = 52
CBOR = 60
CWT = 61
COSE_ENCRYPT0 = 16
COSE_MAC0 = 17
COSE_SIGN1 = 18
COSE_KEY = 101
COSE_KEY_SET = 102
SENML_JSON = 110
SENML_CBOR = 112
CONCISE_PROBLEM_DETAILS_CBOR = 257
ACE_GROUPCOMM_CBOR = 261
