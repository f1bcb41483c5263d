"""Password-policy response controls as a bind's ``result3`` decodes them."""

import pytest
from ldap.controls import KNOWN_RESPONSE_CONTROLS, DecodeControlTuples
from ldap.controls.ppolicy import PasswordPolicyControl

from connector import errors
from connector.directory import ldaperrors

OID = PasswordPolicyControl.controlType


def _decode(value: bytes) -> PasswordPolicyControl:
    (ctrl,) = DecodeControlTuples([(OID, False, value)], ldaperrors.BIND_RESPONSE_CONTROLS)
    assert isinstance(ctrl, PasswordPolicyControl)
    return ctrl


@pytest.mark.parametrize(
    ("value", "error", "before_expiration", "grace"),
    [
        (b"\x30\x00", None, None, None),  # nothing to report: OpenLDAP on every good bind
        (b"\x30\x03\x81\x01\x00", 0, None, None),  # passwordExpired
        (b"\x30\x03\x81\x01\x02", 2, None, None),  # changeAfterReset
        (b"\x30\x05\xa0\x03\x80\x01\x3c", None, 60, None),  # timeBeforeExpiration 60
        (b"\x30\x05\xa0\x03\x81\x01\x03", None, None, 3),  # graceAuthNsRemaining 3
    ],
)
def test_policy_values_decode_as_python_ldap_does(value, error, before_expiration, grace):
    ours = _decode(value)
    theirs = DecodeControlTuples([(OID, False, value)])[0]
    assert (ours.error, ours.timeBeforeExpiration, ours.graceAuthNsRemaining) == (
        error,
        before_expiration,
        grace,
    )
    assert (theirs.error, theirs.timeBeforeExpiration, theirs.graceAuthNsRemaining) == (
        error,
        before_expiration,
        grace,
    )


def test_a_policy_state_on_a_good_bind_is_still_reported():
    state = ldaperrors.bind_success_policy([_decode(b"\x30\x03\x81\x01\x02")], username="u", dn="d")
    assert isinstance(state, errors.PasswordChangeRequired)
    assert ldaperrors.bind_success_policy([_decode(b"\x30\x00")], username="u", dn="d") is None


def test_other_response_controls_are_python_ldaps():
    for oid, cls in KNOWN_RESPONSE_CONTROLS.items():
        if oid != OID:
            assert ldaperrors.BIND_RESPONSE_CONTROLS[oid] is cls
    with pytest.raises(KeyError):
        ldaperrors.BIND_RESPONSE_CONTROLS["1.2.3.4.5.6.7.8.9"]
