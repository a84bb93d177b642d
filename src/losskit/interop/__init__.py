"""Framework bridges. Only these modules import torch or jax, and only when used."""
