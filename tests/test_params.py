import numpy as np
import pytest

from tljax import params as P


def variables():
    return {"params": {"backbone": {"conv1": {"kernel": np.ones((3, 3, 1, 4))}, "bn1": {"scale": np.ones(4)}},
                       "head": {"kernel": np.zeros((4, 5)), "bias": np.zeros(5)}},
            "batch_stats": {"backbone": {"bn1": {"mean": np.zeros(4)}}}}


def test_merge_loads_all_but_dont_load():
    init, loaded = variables(), variables()
    loaded["params"]["backbone"]["conv1"]["kernel"] = np.full((3, 3, 1, 4), 7.0)
    loaded["params"]["head"] = {"kernel": np.ones((4, 10)), "bias": np.ones(10)}  # another task's head
    merged = P.merge_pretrained(init, loaded, dont_load=("head/.*",))
    assert (merged["params"]["backbone"]["conv1"]["kernel"] == 7).all()
    assert merged["params"]["head"]["kernel"].shape == (4, 5) and not merged["params"]["head"]["kernel"].any()


def test_missing_unexpected_and_misshaped_keys_are_named():
    init, loaded = variables(), variables()
    del loaded["params"]["backbone"]["bn1"]
    loaded["params"]["backbone"]["bn_1"] = {"scale": np.ones(4)}
    loaded["params"]["backbone"]["conv1"]["kernel"] = np.ones((3, 3, 2, 4))
    with pytest.raises(P.WeightMismatchError) as err:
        P.merge_pretrained(init, loaded, dont_load=("head/.*",))
    text = str(err.value)
    assert "missing key 'params/backbone/bn1/scale'" in text
    assert "unexpected key 'params/backbone/bn_1/scale' (nearest expected: 'params/backbone/bn1/scale')" in text
    assert "shape mismatch at 'params/backbone/conv1/kernel': model (3, 3, 1, 4), loaded (3, 3, 2, 4)" in text


def test_head_shape_mismatch_without_dont_load():
    loaded = variables()
    loaded["params"]["head"] = {"kernel": np.ones((4, 10)), "bias": np.ones(10)}
    with pytest.raises(P.WeightMismatchError, match="head/kernel"):
        P.merge_pretrained(variables(), loaded)


def test_dont_load_pattern_matching_nothing_is_an_error():
    with pytest.raises(P.WeightMismatchError, match="'classifier/.*' matches no model key"):
        P.merge_pretrained(variables(), variables(), dont_load=("classifier/.*",))
