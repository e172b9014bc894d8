"""The peer wire: cluster keys and the authenticated CBOR envelope."""
