"""Depth order of a backbone's parameters, for strategies that treat layers differently.

Knows the tljax layouts: ResNet (``conv1``/``bn1`` stem, ``layerN`` stages), ViT
(``patch_embed``/``cls_token``/``reg_tokens``/``pos_embed``/``norm_pre``, ``layerN`` blocks; final norms and
``attn_pool`` on top), BERT
(``*embeddings*``, ``layerN`` encoder layers) and VGG (``convS_i``/``bnS_i`` stages, ``fc6``/``fc7``). ConvNeXt and
EfficientNet: ``*stem*`` (and ``bn1``) stem, ``layerN`` stages, final norm / ``conv_head``, ``bn_head`` top.
"""

from __future__ import annotations

import re
from typing import List, Sequence, Tuple

STEM = r"backbone/(conv1|bn1|patch_embed|cls_token|reg_tokens|pos_embed|norm_pre|\w*embeddings\w*|\w*stem\w*)(/.*)?"
BLOCK = re.compile(r"backbone/(?:layer|conv|bn)(\d+)(?:_\d+)?/.*")


def depth_groups(paths: Sequence[str]) -> List[Tuple[str, str]]:
    """``[(group name, regex), …]`` from input to output: stem, blocks in order, top.

    The head (``head/.*``) is not included. Groups that have no parameter are left out.
    """
    backbone = [p for p in paths if p.startswith("backbone/")]
    if not backbone:
        raise ValueError("no 'backbone/…' parameters: depth-aware strategies need a tljax Classifier")
    blocks = sorted({int(m.group(1)) for p in backbone if (m := BLOCK.fullmatch(p)) and not re.fullmatch(STEM, p)})
    if not blocks:
        raise ValueError(f"no numbered blocks (layerN, convN_i) found among {backbone[:3]} …; "
                         "use freeze:<regex> for this architecture")
    groups = [("stem", STEM)] + [(f"block{i}", rf"backbone/(?:layer|conv|bn){i}(?:_\d+)?/.*") for i in blocks]
    groups.append(("top", "backbone/.*"))  # final norms, pooler, fc6/fc7: whatever is left
    covered = lambda rx: any(re.fullmatch(rx, p) for p in backbone)  # noqa: E731
    stem_and_blocks = [g for g in groups[:-1] if covered(g[1])]
    rest = [p for p in backbone if not any(re.fullmatch(rx, p) for _, rx in stem_and_blocks)]
    return stem_and_blocks + ([groups[-1]] if rest else [])
