"""Every registered model is held to the contract in models/base.py by dgmbench.testing.check_model, parametrised
over the registry and the checks (torchvision's test_models.py and scikit-learn's parametrize_with_checks
patterns): a new family, in-tree or a plugin, is tested here for free, against the one definition of "conforms"
that third-party packages run too."""

from __future__ import annotations

import pytest

from dgmbench.models import MODELS, get_model
from dgmbench.testing import CHECK_NAMES, applicable_checks, check_model

ALL = MODELS.names()


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("name", ALL)
def test_contract(name, check, digits):
    cls = MODELS.get(name)
    if check not in applicable_checks(cls):
        pytest.skip(f"{check} does not apply to {name}'s declarations")
    # Real images for the data-driven checks: the loss must go down on digits, not only on synthetic prototypes.
    assert check_model(cls, digits.info, data=digits.train.x[:128], checks=[check]) == [check]


@pytest.mark.parametrize("name", ALL)
def test_unknown_hparam_lists_valid_keys(name, digits):
    from dgmbench.config import ConfigError

    with pytest.raises(ConfigError, match="valid keys"):
        get_model(name, digits.info, not_a_field=1)
