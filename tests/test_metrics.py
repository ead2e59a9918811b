import numpy as np
import pytest
from sklearn import metrics as skm

from tljax.metrics import classification_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 5, 300))
    if seed == 2:  # a class that is never predicted, another never present
        predictions[predictions == 3] = 0
        labels[labels == 4] = 1
    got = classification_metrics(labels, predictions, 5)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    for name, fn in [("precision_macro", skm.precision_score), ("recall_macro", skm.recall_score),
                     ("f1_macro", skm.f1_score)]:
        assert got[name] == pytest.approx(fn(labels, predictions, average="macro", zero_division=0)), name
    np.testing.assert_array_equal(got["confusion"], skm.confusion_matrix(labels, predictions, labels=range(5)))
