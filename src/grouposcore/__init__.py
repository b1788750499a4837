"""grouposcore: Group OSCORE (RFC 10021) and OSCORE (RFC 8613) for CoAP."""

__version__ = "0.1.0"
