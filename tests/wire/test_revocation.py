"""Operator-signed revocations: only a listed operator key counts; malformed input is
refused with a reason; the DHT refuses records a revoked node published."""

import pytest

from dvms.overlay.records import Identity, RecordError, Validator, ValidatorRegistry
from dvms.wire.revocation import (
    RevocationError,
    decode_revocation,
    generate_operator_key,
    operator_public_key,
    sign_revocation,
)

NODE = 0x1234 << 140


def test_a_revocation_round_trips_and_verifies():
    private, public = generate_operator_key()
    assert operator_public_key(private) == public
    rev = decode_revocation(sign_revocation(private, NODE, 1000.0).encode())
    assert (rev.node_id, rev.issued, rev.operator) == (NODE, 1000.0, public)
    rev.verify(frozenset({public}))


def test_another_operator_key_or_a_forged_field_is_refused():
    private, public = generate_operator_key()
    rogue, _ = generate_operator_key()
    with pytest.raises(RevocationError, match="operator_keys do not list"):
        sign_revocation(rogue, NODE, 1.0).verify(frozenset({public}))
    rev = sign_revocation(private, NODE, 1.0)
    forged = type(rev)(NODE + 1, rev.issued, rev.operator, rev.sig)
    with pytest.raises(RevocationError, match="bad signature"):
        forged.verify(frozenset({public}))


@pytest.mark.parametrize("data", [b"", b"\xff", b"\x80", b"\x85\x01\x02\x03\x04\x05"])
def test_malformed_input_is_refused_never_raised_otherwise(data):
    with pytest.raises(RevocationError):
        decode_revocation(data)


def test_records_of_a_revoked_publisher_are_refused():
    reg = ValidatorRegistry([Validator("ns/")])
    ident = Identity.generate()
    rec = ident.sign_record("ns/a", b"v", seq=1, ttl_s=60.0)
    reg.validate(rec)
    reg.revoked.add(ident.node_id)
    with pytest.raises(RecordError, match="publisher is revoked"):
        reg.validate(rec)
