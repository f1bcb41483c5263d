"""The command names and the write-back check are defined once and used by every caller."""

import pytest

from connector import errors, metrics
from connector.channel import commands, vocabulary
from connector.directory import passwords


def test_one_list_of_command_names():
    assert commands.COMMAND_NAMES is vocabulary.COMMAND_NAMES
    assert metrics.COMMAND_NAMES is vocabulary.COMMAND_NAMES
    assert len(set(vocabulary.COMMAND_NAMES)) == len(vocabulary.COMMAND_NAMES) == 5


def test_write_back_off_is_refused_with_the_username():
    passwords.require_write_back(True, username="bob")  # on: nothing happens
    with pytest.raises(errors.InsufficientAccessRights) as caught:
        passwords.require_write_back(False, username="bob")
    assert "ENABLE_WRITE_BACK is off" in str(caught.value)
    assert caught.value.context.get("username") == "bob"
