"""AdaptiveFeedForward: a Transformer feed-forward block with a learned hidden width."""

import numpy as np
import pytest

from keras_awn.layers import AdaptiveFeedForward


def test_feed_forward_keeps_the_model_dimension_and_its_config():
    block = AdaptiveFeedForward(model_dim=6, initial_units=10, dropout=0.1)
    tokens = np.random.default_rng(0).normal(size=(2, 3, 6)).astype("float32")
    assert tuple(block(tokens).shape) == (2, 3, 6)
    assert block.compute_output_shape((2, 3, 6)) == (2, 3, 6)
    config = block.get_config()
    assert config["model_dim"] == 6 and "output_units" not in config
    clone = AdaptiveFeedForward.from_config(config)
    assert clone.model_dim == 6 and clone.hidden[0].capacity == block.hidden[0].capacity
    with pytest.raises(ValueError, match="Received: dropout"):
        AdaptiveFeedForward(model_dim=6, dropout=-0.1)
