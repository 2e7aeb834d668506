"""Training: the network, compute settings, warm starts, pretraining and the model contract."""
