"""The one exception tree: every error the connector raises on purpose is a ConnectorError."""

import inspect

import pytest

from connector import errors, secretbox
from connector.channel import client, commands
from connector.profiles import entry_to_raw_profile, load_profile_mapper, validate_profile

CLASSES = [
    obj
    for obj in vars(errors).values()
    if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
]


def test_every_error_of_the_module_is_in_the_tree_and_its_drawing():
    assert len(CLASSES) > 20
    for cls in CLASSES:
        assert issubclass(cls, errors.ConnectorError), cls
        assert f"── {cls.__name__} " in errors.__doc__ or cls is errors.ConnectorError, cls


def test_the_errors_outside_the_tree_joined_it_and_keep_their_old_homes():
    assert client.HubError is errors.HubError
    assert client.HubUnavailable is errors.HubUnavailable
    assert client.HubUntrusted is errors.HubUntrusted
    assert client.HubRejected is errors.HubRejected
    assert commands.CommandRefused is errors.CommandRefused
    assert secretbox.SecretError is errors.SecretError
    for cls in (errors.HubError, errors.CommandRefused, errors.SecretError, errors.ProfileError):
        assert issubclass(cls, errors.ConnectorError)


def test_wire_names_are_derived_from_the_classes_and_stable():
    assert set(errors.WIRE_NAMES) == {
        "WrongUsername",
        "WrongPassword",
        "AccountDisabled",
        "AccountLocked",
        "AccountExpired",
        "PasswordExpired",
        "PasswordChangeRequired",
        "InsufficientAccessRights",
        "PasswordComplexity",
        "Unavailable",
        "Unexpected",
    }
    assert len(set(errors.WIRE_NAMES)) == len(errors.WIRE_NAMES)
    assert {cls.wire_name for cls in CLASSES} == set(errors.WIRE_NAMES)
    assert errors.HubUnavailable("down").to_wire() == {"name": "Unavailable", "message": "down"}
    assert errors.HubRejected("no", 403).wire_name == "Unexpected"


@pytest.mark.parametrize(
    "attrs",
    [
        {"objectGUID": [b"\x01" * 15]},  # one byte short
        {"objectGUID": [b"\x01" * 16, b"\x02" * 16]},  # two values
        {"objectSid": [b"\x01\x05"]},
    ],
)
def test_a_malformed_attribute_is_a_profile_error(attrs):
    with pytest.raises(errors.ProfileError, match="cn=x,dc=test") as info:
        entry_to_raw_profile("cn=x,dc=test", {"uid": [b"x"], **attrs})
    assert isinstance(info.value, errors.ConnectorError)
    assert isinstance(info.value, ValueError)  # what it always was


def test_a_bad_mapper_result_is_a_profile_error(tmp_path):
    with pytest.raises(errors.ProfileError, match="must return a dict"):
        validate_profile(["x"])
    mapper_file = tmp_path / "mapper.py"
    mapper_file.write_text("def map_profile(raw, default):\n    return 1 / 0\n")
    mapper, _ = load_profile_mapper(str(mapper_file))
    with pytest.raises(errors.ProfileError, match="ZeroDivisionError"):
        mapper({"dn": "cn=x", "uid": "x"})
