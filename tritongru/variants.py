"""The two GRU formulations tritongru implements, and the check every entry point shares."""

VARIANTS = ("cudnn", "classic")
"""``"cudnn"``: reset applied after the hidden product (what cuDNN and ``torch.nn.GRU`` compute).
``"classic"``: reset applied before the hidden product (the original "fully gated unit")."""


def check_variant(variant: object) -> str:
    """Return ``variant`` if it names a formulation, else raise ``ValueError``/``TypeError``."""
    if not isinstance(variant, str):
        raise TypeError(f"variant must be a str, one of {VARIANTS}; got {type(variant).__name__}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    return variant
