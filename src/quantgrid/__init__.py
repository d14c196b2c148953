"""quantgrid: train LoRA adapters on private finance data, prove them on a hub, merge and serve."""

__version__ = "0.1.0"
