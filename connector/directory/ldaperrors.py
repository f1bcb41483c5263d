"""The one place where python-ldap's exceptions become the connector's errors.

Active Directory explains a refused bind with a sub-code in the error text
(``80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 52e, v4563``);
OpenLDAP explains it in a password-policy response control, which it sends only when the bind
asked for one. Both are decoded here, into the kinds of :mod:`connector.errors`.
"""

from __future__ import annotations

import re
from typing import Any

import ldap
from ldap.controls import KNOWN_RESPONSE_CONTROLS, DecodeControlTuples
from ldap.controls.ppolicy import PasswordPolicyControl

from connector import errors

# python-ldap exceptions that mean "this server cannot be used right now".
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    ldap.SERVER_DOWN,
    ldap.CONNECT_ERROR,
    ldap.TIMEOUT,
    ldap.UNAVAILABLE,
    ldap.BUSY,
)

_AD_SUBCODE = re.compile(r"\bdata ([0-9a-fA-F]{3,4})\b")

# Active Directory bind sub-codes (hex, from the "data NNN" part of the error text).
AD_SUBCODES: dict[str, tuple[type[errors.AuthError], str]] = {
    "525": (errors.WrongUsername, "no such user"),
    "52e": (errors.WrongPassword, "wrong username or password"),
    "530": (errors.InvalidLogonHours, "not permitted to log on at this time"),
    "531": (errors.InvalidLogonHours, "not permitted to log on from this workstation"),
    "532": (errors.PasswordExpired, "the password has expired"),
    "533": (errors.AccountDisabled, "the account is disabled"),
    "534": (errors.AccountDisabled, "the user has not been granted this logon type"),
    "701": (errors.AccountExpired, "the account has expired"),
    "773": (errors.PasswordChangeRequired, "the password must be changed before logging on"),
    "775": (errors.AccountLocked, "the account is locked"),
}

# OpenLDAP ppolicy response errors (draft-behera-ldap-password-policy, PasswordPolicyResponseValue).
PPOLICY_PASSWORD_EXPIRED = 0
PPOLICY_ACCOUNT_LOCKED = 1
PPOLICY_CHANGE_AFTER_RESET = 2
PPOLICY_QUALITY_ERRORS = (5, 6, 7, 8)  # insufficient quality, too short, too young, in history
#: why a new password was refused, in the words the sign-in page uses (see REFUSAL_WORDS)
PPOLICY_REFUSALS = {5: "too_simple", 6: "too_short", 7: "too_young", 8: "in_history"}

# Active Directory "extended error" codes seen on writes.
_AD_COMPLEXITY = ("0000052d",)


def error_info(exc: BaseException) -> dict[str, Any]:
    """The dict python-ldap attaches to its exceptions (empty if there is none)."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], dict) else {}


def describe(exc: BaseException) -> str:
    """A short, secret-free text for a python-ldap exception: its description and info."""
    info = error_info(exc)
    desc = str(info.get("desc") or type(exc).__name__)
    detail = info.get("info")
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return f"{desc}: {detail}" if detail else desc


def ad_subcode(exc: BaseException) -> str | None:
    """The Active Directory ``data NNN`` sub-code of a failed operation, lower-case."""
    info = error_info(exc).get("info")
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    match = _AD_SUBCODE.search(info or "")
    return match.group(1).lower() if match else None


class _PasswordPolicyResponse(PasswordPolicyControl):  # type: ignore[misc]
    """python-ldap's password-policy response, with the answer OpenLDAP gives on every bind
    that asks for it and has nothing to report (an empty SEQUENCE) decoded without pyasn1,
    which takes about 0.1 ms; any other value is decoded by python-ldap as before."""

    def decodeControlValue(self, encodedControlValue: bytes) -> None:
        if encodedControlValue != b"\x30\x00":
            super().decodeControlValue(encodedControlValue)


class _ResponseControls(dict[str, Any]):
    """python-ldap's known response controls (looked up when asked), the policy one ours."""

    def __missing__(self, oid: str) -> Any:
        return KNOWN_RESPONSE_CONTROLS[oid]


#: ``resp_ctrl_classes`` for ``result3`` of a bind that asked for the password policy
BIND_RESPONSE_CONTROLS = _ResponseControls(
    {PasswordPolicyControl.controlType: _PasswordPolicyResponse}
)


def ppolicy_response(ctrls: Any) -> PasswordPolicyControl | None:
    """The password-policy response among decoded or raw response controls, if any."""
    if not ctrls:
        return None
    if isinstance(ctrls[0], tuple):
        try:
            ctrls = DecodeControlTuples(ctrls)
        except Exception:  # noqa: BLE001 - a malformed control must not hide the outcome
            return None
    for ctrl in ctrls:
        if isinstance(ctrl, PasswordPolicyControl):
            return ctrl
    return None


def bind_failure(exc: Exception, *, username: str, dn: str, server: str) -> errors.ConnectorError:
    """Classify a failed user bind into an authentication outcome or an infrastructure error."""
    ctx = {"username": username, "dn": dn, "server": server}
    if isinstance(exc, CONNECTION_ERRORS):
        return errors.DirectoryUnavailable(f"directory unavailable: {describe(exc)}", **ctx)
    if isinstance(exc, ldap.INVALID_CREDENTIALS):
        code = ad_subcode(exc)
        if code in AD_SUBCODES:
            kind, message = AD_SUBCODES[code]
            return kind(message, code=code, **ctx)
        policy = ppolicy_response(error_info(exc).get("ctrls"))
        if policy is not None and policy.error == PPOLICY_ACCOUNT_LOCKED:
            return errors.AccountLocked("the account is locked", code="ppolicy:1", **ctx)
        if policy is not None and policy.error == PPOLICY_PASSWORD_EXPIRED:
            return errors.PasswordExpired("the password has expired", code="ppolicy:0", **ctx)
        return errors.WrongPassword("wrong username or password", code=code, **ctx)
    if isinstance(exc, ldap.INAPPROPRIATE_AUTH | ldap.UNWILLING_TO_PERFORM):
        return errors.WrongPassword("wrong username or password", code=describe(exc), **ctx)
    if isinstance(exc, ldap.CONFIDENTIALITY_REQUIRED | ldap.STRONG_AUTH_REQUIRED):
        return errors.DirectoryFailure(
            "the server requires TLS for simple binds: use ldaps:// or set LDAP_STARTTLS", **ctx
        )
    return errors.DirectoryFailure(f"unexpected directory error: {describe(exc)}", **ctx)


def bind_success_policy(ctrls: Any, *, username: str, dn: str) -> errors.AuthError | None:
    """A password-policy state reported on a bind that itself succeeded (OpenLDAP)."""
    policy = ppolicy_response(ctrls)
    if policy is None:
        return None
    if policy.error == PPOLICY_CHANGE_AFTER_RESET:
        return errors.PasswordChangeRequired(
            "the password must be changed before logging on",
            username=username,
            dn=dn,
            code="ppolicy:2",
        )
    if policy.error == PPOLICY_PASSWORD_EXPIRED:
        return errors.PasswordExpired(
            "the password has expired", username=username, dn=dn, code="ppolicy:0"
        )
    if policy.error is None and policy.graceAuthNsRemaining is not None:
        # expired, and this bind spent one of the grace sign-ins ppolicy keeps for a change
        return errors.PasswordExpired(
            f"the password has expired (grace sign-ins left: {policy.graceAuthNsRemaining})",
            username=username,
            dn=dn,
            code="ppolicy:grace",
        )
    return None


def time_before_expiration(ctrls: Any) -> int | None:
    """Seconds before the password expires, when a bind's password-policy response says."""
    policy = ppolicy_response(ctrls)
    seconds = None if policy is None else policy.timeBeforeExpiration
    return int(seconds) if seconds is not None else None


def write_failure(exc: Exception, *, username: str, dn: str) -> errors.ConnectorError:
    """Classify a refused password change."""
    ctx = {"username": username, "dn": dn}
    if isinstance(exc, CONNECTION_ERRORS):
        return errors.DirectoryUnavailable(f"directory unavailable: {describe(exc)}", **ctx)
    if isinstance(exc, ldap.INSUFFICIENT_ACCESS):
        return errors.InsufficientAccessRights(
            "the directory refused the change: insufficient access rights", **ctx
        )
    if isinstance(exc, ldap.CONSTRAINT_VIOLATION):
        policy = ppolicy_response(error_info(exc).get("ctrls"))
        info = str(error_info(exc).get("info") or "").lower()
        if policy is not None and policy.error in PPOLICY_REFUSALS:
            return errors.PasswordComplexity(
                "the new password does not meet the password policy",
                reason=PPOLICY_REFUSALS[policy.error],
                **ctx,
            )
        if any(code in info for code in _AD_COMPLEXITY):
            # AD says no more than "length, complexity, history or minimum age"
            return errors.PasswordComplexity(
                "the new password does not meet the password policy", reason="policy", **ctx
            )
        return errors.PasswordComplexity(
            f"the directory refused the new password: {describe(exc)}", **ctx
        )
    if isinstance(exc, ldap.INVALID_CREDENTIALS):
        return errors.WrongPassword("the current password is wrong", **ctx)
    if isinstance(exc, ldap.UNWILLING_TO_PERFORM):
        return errors.InsufficientAccessRights(
            f"the directory is unwilling to change the password: {describe(exc)}", **ctx
        )
    return errors.DirectoryFailure(f"unexpected directory error: {describe(exc)}", **ctx)
