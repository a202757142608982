"""Arms: ids, the product space, duplicates, arm features, and ModelSpec prices and key handling."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from uniscale_lc.arms import ARM_FEATURE_DIM, ARM_FEATURE_NAMES, Arm, ArmSpace, arm_features
from uniscale_lc.errors import ConfigError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.strategies import BestOfN, JudgeScorer, MajorityVote, Reflection, Single

CHEAP = ModelSpec(model="small", input_usd_per_mtok=0.1, output_usd_per_mtok=0.4, params_b=8)
DEAR = ModelSpec(model="large", input_usd_per_mtok=5.0, output_usd_per_mtok=15.0)


def test_arm_ids_are_readable_and_stable():
    assert Arm(CHEAP, Single()).id == "small|single"
    assert Arm(CHEAP, BestOfN(n=4)).id == "small|best_of_n(n=4)"
    assert (
        Arm(CHEAP, BestOfN(n=4, scorer=JudgeScorer(model=DEAR))).id
        == "small|best_of_n(n=4,scorer=judge:large)"
    )
    assert Arm(DEAR, MajorityVote(n=5, extractor="choice", early_stop=True)).id == (
        "large|majority_vote(n=5,extractor=choice,early_stop)"
    )
    assert Arm(DEAR.model_copy(update={"name": "big"}), Reflection(rounds=2)).id == "big|reflection(rounds=2)"


def test_product_and_queries():
    strategies = [Single(), BestOfN(n=2), MajorityVote(n=3)]
    space = ArmSpace.product([CHEAP, DEAR], strategies)
    assert len(space) == 6
    assert space.ids[:3] == ("small|single", "small|best_of_n(n=2)", "small|majority_vote(n=3)")
    assert [m.model for m in space.models] == ["small", "large"]
    assert "large|single" in space and space["large|single"].model is DEAR
    assert space.get("nope") is None
    features = space.features()
    assert features.shape == (6, ARM_FEATURE_DIM) and not features.flags.writeable
    assert np.array_equal(features[4], arm_features(space["large|best_of_n(n=2)"]))


def test_duplicates_empty_and_unknown_ids_are_refused():
    with pytest.raises(ConfigError, match=r"duplicate arm id 'small\|single'"):
        ArmSpace([Arm(CHEAP, Single()), Arm(CHEAP, Single())])
    with pytest.raises(ConfigError, match=r"ArmSpace\.arms: got an empty list"):
        ArmSpace([])
    with pytest.raises(ConfigError, match=r"ArmSpace\.product\.models"):
        ArmSpace.product([], [Single()])
    with pytest.raises(ConfigError, match=r"ArmSpace\.product\.strategies"):
        ArmSpace.product([CHEAP], [])
    with pytest.raises(ConfigError, match="got str"):
        ArmSpace(["small|single"])  # type: ignore[list-item]
    space = ArmSpace.product([CHEAP], [Single(), BestOfN(n=2)])
    with pytest.raises(ConfigError, match="not in the arm space"):
        space["small|reflection(rounds=1)"]
    with pytest.raises(ConfigError, match="empty subset"):
        space.check_ids([])
    with pytest.raises(ConfigError, match="unknown arm ids"):
        space.check_ids(["small|single", "x"])


def test_add_remove_change_version_and_features():
    space = ArmSpace.product([CHEAP], [Single(), BestOfN(n=2)])
    version = space.version
    space.add(Arm(DEAR, Single()))
    assert space.version == version + 1 and space.features().shape[0] == 3
    removed = space.remove("small|single")
    assert removed.id == "small|single" and space.features().shape[0] == 2
    with pytest.raises(ConfigError, match="cannot remove the last arm"):
        space.remove("small|best_of_n(n=2)")
        space.remove("large|single")
    with pytest.raises(ConfigError, match=r"ArmSpace\.remove\.arm_id"):
        space.remove("gone")


def test_arm_features_describe_price_size_kind_and_budget():
    names = list(ARM_FEATURE_NAMES)
    small, large = arm_features(Arm(CHEAP, Single())), arm_features(Arm(DEAR, Single()))
    assert small[names.index("log_price")] < large[names.index("log_price")]
    assert small[names.index("params_unknown")] == 0.0 and large[names.index("params_unknown")] == 1.0
    vote3, vote9 = arm_features(Arm(CHEAP, MajorityVote(n=3))), arm_features(Arm(CHEAP, MajorityVote(n=9)))
    assert vote3[names.index("kind=majority_vote")] == 1.0
    assert vote3[names.index("log_budget")] < vote9[names.index("log_budget")]
    # Same model, same strategy, different budget: the features differ only in the budget terms.
    differs = {names[i] for i in np.flatnonzero(vote3 != vote9)}
    assert differs == {"log_budget", "kind=majority_vote*log_budget", "log_price*log_budget"}
    hosted = ModelSpec(model="hosted_vllm/my-model", gpu_usd_per_hour=2.0)
    assert arm_features(Arm(hosted, Single()))[names.index("self_hosted")] == 1.0
    # Magnitudes stay small even at the extremes (free model, 256 samples): log_price * log_budget = -3.
    assert all(np.abs(arm_features(Arm(m, BestOfN(n=256)))).max() <= 3.0 for m in (CHEAP, DEAR, hosted))


def test_model_spec_prices_from_litellm_explicit_or_missing():
    looked_up = ModelSpec(model="gpt-4o-mini")
    assert looked_up.input_usd_per_mtok == pytest.approx(0.15)
    assert looked_up.output_usd_per_mtok == pytest.approx(0.6)
    assert ModelSpec(model="openai/gpt-4o-mini").input_usd_per_mtok == pytest.approx(0.15)
    explicit = ModelSpec(model="gpt-4o-mini", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
    assert (explicit.input_usd_per_mtok, explicit.output_usd_per_mtok) == (1.0, 2.0)
    assert explicit.blended_usd_per_mtok == pytest.approx((1.0 + 3 * 2.0) / 4)
    with pytest.raises(ValidationError) as missing:
        ModelSpec(model="hosted_vllm/no-such-model-xyz")
    text = str(missing.value)
    assert "input_usd_per_mtok: no price for 'hosted_vllm/no-such-model-xyz'" in text
    assert "pass input_usd_per_mtok/output_usd_per_mtok, or gpu_usd_per_hour" in text
    with pytest.raises(ValidationError, match="give both"):
        ModelSpec(model="x", input_usd_per_mtok=1.0)
    hosted = ModelSpec(model="hosted_vllm/no-such-model-xyz", gpu_usd_per_hour=1.5)
    assert hosted.self_hosted and hosted.input_usd_per_mtok == 0.0
    with pytest.raises(ValidationError, match=r"'\|'"):
        ModelSpec(model="a|b", input_usd_per_mtok=1.0, output_usd_per_mtok=1.0)


@pytest.mark.parametrize(
    "secret", ["sk-proj-Abc123Def456Ghi789", "sk-ant-api03-XYZ_secret-value", "Bearer abc.def"]
)
def test_api_key_env_refuses_a_key_without_echoing_it(secret):
    with pytest.raises(ValidationError) as error:
        ModelSpec(model="gpt-4o-mini", api_key_env=secret)
    text = str(error.value) + repr(error.value)  # what logs and tracebacks show
    assert "NAME of an environment variable" in text
    assert secret not in text
    # A key passed to a field that does not exist is not echoed either.
    with pytest.raises(ValidationError) as extra:
        ModelSpec(model="gpt-4o-mini", openai_api_key=secret)  # type: ignore[call-arg]
    assert secret not in str(extra.value)
    # The key itself goes in `api_key` (a SecretStr): kept, and never shown or serialised.
    keyed = ModelSpec(model="gpt-4o-mini", api_key=secret)  # type: ignore[arg-type]
    assert keyed.resolved_api_key() == secret
    assert secret not in repr(keyed) + str(keyed) + keyed.model_dump_json() + str(keyed.model_dump())


def test_api_key_is_read_from_the_environment_at_call_time(monkeypatch):
    spec = ModelSpec(model="gpt-4o-mini", api_key_env="UNISCALE_TEST_KEY")
    monkeypatch.delenv("UNISCALE_TEST_KEY", raising=False)
    assert spec.resolved_api_key() is None
    monkeypatch.setenv("UNISCALE_TEST_KEY", "value")
    assert spec.resolved_api_key() == "value"
    assert "value" not in repr(spec)


def test_cached_views_follow_adds_and_removes():
    a = ModelSpec(model="a", input_usd_per_mtok=1.0, output_usd_per_mtok=1.0)
    b = ModelSpec(model="b", input_usd_per_mtok=1.0, output_usd_per_mtok=1.0)
    space = ArmSpace.product([a], [Single(), BestOfN(n=4)])
    assert space.ids == ("a|single", "a|best_of_n(n=4)") and space.models == (a,)
    assert space.ids_of_model("a") == ("a|single", "a|best_of_n(n=4)") and space.ids_of_model("b") == ()
    space.add(Arm(b, Single()))
    assert space.ids[-1] == "b|single" and space.models == (a, b) and space.ids_of_model("b") == ("b|single",)
    space.remove("a|best_of_n(n=4)")
    assert space.ids == ("a|single", "b|single") and space.ids_of_model("a") == ("a|single",)
    assert len(space.arms) == 2 and space.arms[0].id == "a|single"
