"""The one value check of settings: kind, interval, null where optional, choices; one line naming the key."""
from __future__ import annotations

import math

import pytest

from sip_train import values


@pytest.mark.parametrize("call, message", [
    (lambda: values.integer("updates_per_step", 0), "updates_per_step=0 is invalid: must be a positive integer"),
    (lambda: values.integer("updates_per_step", True), "updates_per_step=True is invalid: must be a positive integer"),
    (lambda: values.integer("seed", 1.0, "[0, inf)"), "seed=1.0 is invalid: must be a non-negative integer"),
    (lambda: values.integer("k", 1, "[2, 8]"), "k=1 is invalid: must be an integer in [2, 8]"),
    (lambda: values.integer("optimizer.jacobian_chunk", 0, optional=True),
     "optimizer.jacobian_chunk=0 is invalid: must be a positive integer or null"),
    (lambda: values.number("optimizer.lr", 0), "optimizer.lr=0 is invalid: must be a positive number"),
    (lambda: values.number("optimizer.lr", "abc"), "optimizer.lr='abc' is invalid: must be a positive number"),
    (lambda: values.number("optimizer.lr", math.nan), "optimizer.lr=nan is invalid: must be a positive number"),
    (lambda: values.number("inverse.damping", -1e-3, "[0, inf)"),
     "inverse.damping=-0.001 is invalid: must be a non-negative number"),
    (lambda: values.number("optimizer.truncation", 1, "[0, 1)"), "optimizer.truncation=1 is invalid: must be in [0, 1)"),
    (lambda: values.choice("optimizer.proxy_norm", "l3", ("l2", "l1")),
     "optimizer.proxy_norm='l3' is invalid: choose one of ['l2', 'l1']"),
])
def test_a_bad_value_is_named_in_one_line(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


def test_a_good_value_comes_back_in_its_kind():
    assert values.integer("k", 3) == 3
    assert values.integer("chunk", None, optional=True) is None
    assert values.number("optimizer.kappa", -1, "[-1, 1]") == -1.0 and isinstance(values.number("lr", 1), float)
    assert values.number("optimizer.truncation", 0, "[0, 1)") == 0.0
    assert values.choice("optimizer.proxy_norm", "l1", ("l2", "l1")) == "l1"
