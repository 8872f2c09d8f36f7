"""tritongru: hand-written Triton kernels for the GRU.

Drop-ins for ``torch.nn.GRU`` / ``torch.nn.GRUCell`` (:class:`GRU`, :class:`GRUCell`), the LayerNorm-GRU
(:class:`LayerNormGRU`, :class:`LayerNormGRUCell`), a functional API for research code that owns its weights
(:func:`gru`, :func:`gru_layer`, :func:`gru_cell`; :func:`layernorm_gru`, :func:`layernorm_gru_layer`,
:func:`layernorm_gru_cell`), the kernels as ``torch.library`` custom ops (``torch.ops.tritongru``,
:mod:`tritongru.ops`), and the plain-PyTorch reference of both formulations and of the multi-head, zoneout and
LayerNorm variants (:mod:`tritongru.reference`; zoneout's masks: :mod:`tritongru.zoneout`). Bad input raises
:class:`GRUInputError` or :class:`GRUDtypeError`, catchable as the ``ValueError``/``RuntimeError`` torch raises
for the same mistakes.
"""

__version__ = "0.1.0"

from tritongru import reference
from tritongru.functional import gru, gru_cell, gru_layer, layernorm_gru, layernorm_gru_cell, layernorm_gru_layer
from tritongru.launchers import check_grid_barriers
from tritongru.modules import GRU, GRUCell, LayerNormGRU, LayerNormGRUCell
from tritongru.validation import GRUDtypeError, GRUInputError
from tritongru.variants import VARIANTS

__all__ = [
    "GRU",
    "VARIANTS",
    "GRUCell",
    "GRUDtypeError",
    "GRUInputError",
    "LayerNormGRU",
    "LayerNormGRUCell",
    "__version__",
    "check_grid_barriers",
    "gru",
    "gru_cell",
    "gru_layer",
    "layernorm_gru",
    "layernorm_gru_cell",
    "layernorm_gru_layer",
    "reference",
]
