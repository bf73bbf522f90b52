# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import pytest

from ansible_collections.mcpgateway.mtls.plugins.module_utils._errors import PKIError
from ansible_collections.mcpgateway.mtls.plugins.module_utils._names import validate_cert_name, validate_cert_names


@pytest.mark.parametrize("name", ["a", "guard", "Output_Length-Guard.v2", "9lives"])
def test_valid_names(name):
    assert validate_cert_name(name) == name


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"),
    ("a/b", "'/'"),
    ("/", "'/'"),
    ("..", ".."),
    ("a..b", ".."),
    (".hidden", "must match"),
    ("-x", "must match"),
    ("sp ace", "must match"),
    (None, "string"),
    (3, "string"),
])
def test_invalid_names(name, fragment):
    with pytest.raises(PKIError) as err:
        validate_cert_name(name)
    assert fragment in str(err.value)
    assert repr(name) in str(err.value)


def test_repeated_names():
    with pytest.raises(PKIError, match="duplicate certificate name 'a'"):
        validate_cert_names(["a", "b", "a"])
    assert validate_cert_names(["a", "b"]) == ["a", "b"]
