"""Generic building blocks (timm ``layers/`` style): tubelet embedding, positional embeddings, attention, MLP,
stochastic depth, transformer blocks. Models in :mod:`vidtok.models` assemble them."""

from vidtok.models.layers.attention import ATTN_AXES, QKV_BIAS_MODES, Attention
from vidtok.models.layers.blocks import ATTN_ORDERS, Block, FactorisedBlock
from vidtok.models.layers.drop_path import DropPath, drop_path
from vidtok.models.layers.mlp import ACTS, Mlp, get_act
from vidtok.models.layers.pos_embed import POS_EMBED_KINDS, PosEmbed, resize_grid_table, sincos_table
from vidtok.models.layers.tubelet import INFLATE_MODES, TubeletEmbed, inflate_2d_kernel

__all__ = [
    "ACTS",
    "ATTN_AXES",
    "ATTN_ORDERS",
    "Attention",
    "Block",
    "DropPath",
    "FactorisedBlock",
    "INFLATE_MODES",
    "Mlp",
    "POS_EMBED_KINDS",
    "PosEmbed",
    "QKV_BIAS_MODES",
    "TubeletEmbed",
    "drop_path",
    "get_act",
    "inflate_2d_kernel",
    "resize_grid_table",
    "sincos_table",
]
