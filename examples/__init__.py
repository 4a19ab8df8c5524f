"""Runnable examples: `python examples/lecture.py`, `python examples/two_layer_net.py`.  The model
functions and data builders are importable (`from examples.two_layer_net import loss, spiral`)."""
