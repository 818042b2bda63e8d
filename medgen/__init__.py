"""medgen: generative models for medical data on MONAI and PyTorch.

Imports here stay light so `medgen --help` answers at once; heavy modules (torch, monai)
are imported by the subpackages that need them.
"""

__version__ = "0.1.0"
