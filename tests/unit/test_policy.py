import pytest

from warden.models.exceptions import ModelRejected
from warden.models.policy import Policy


def test_policy_maps_scores_to_actions() -> None:
    policy = Policy(junk=0.5, block=0.9)
    assert policy.decide(0.1) == "allow"
    assert policy.decide(0.5) == "junk"
    assert policy.decide(0.89) == "junk"
    assert policy.decide(0.9) == "block"


@pytest.mark.parametrize(("junk", "block"), [(0.9, 0.5), (-0.1, 0.5), (0.5, 1.5)])
def test_policy_refuses_inconsistent_thresholds(junk: float, block: float) -> None:
    with pytest.raises(ModelRejected, match="thresholds"):
        Policy(junk=junk, block=block)
