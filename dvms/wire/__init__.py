"""The peer wire, the bottom of the stack under every protocol (it imports only the
kernel): how a datagram is authenticated, framed and decoded.

- ``keys``      cluster keys: ``generate_key``, ``load_key``, ``write_key``
- ``envelope``  ``WireCodec`` (HMAC tag, version, replay window, drop counters) and the
  ``MessageRegistry`` of message classes by type code
- ``schema``    the annotations a message dataclass declares its fields with (``Range``,
  ``MaxLen``, ``IdBytes``) and ``compile_record``, the codec built from them

The package re-exports nothing: the CLI imports ``keys`` alone, and importing the
codec (cbor2, the schema compiler) would slow its startup.
"""
