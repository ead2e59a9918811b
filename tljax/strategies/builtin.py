"""The built-in strategies, one small function each (see ``tljax.strategies.register``)."""

from __future__ import annotations

import re

from tljax.strategies import FROZEN, TRAINABLE, Strategy, number, register
from tljax.strategies.layout import depth_groups

HEAD = "head/.*"
NORM = r"backbone/(.*/)?(\w*_)?(bn|norm)\w*/(scale|bias)"
EVERYTHING = [(".*", TRAINABLE)]


@register("scratch")
def scratch(arg: str = "") -> Strategy:
    """Random initialisation, everything trained: the no-transfer baseline."""
    return Strategy("scratch", EVERYTHING, load_pretrained=False)


@register("full_ft")
def full_ft(arg: str = "") -> Strategy:
    return Strategy("full_ft", EVERYTHING)


@register("linear_probe")
def linear_probe(arg: str = "") -> Strategy:
    return Strategy("linear_probe", [(HEAD, TRAINABLE), (".*", FROZEN)])


@register("freeze")
def freeze(regex: str) -> Strategy:
    """Freezes every parameter whose path fully matches ``regex``; trains the rest."""
    if not regex:
        raise ValueError("strategy 'freeze' needs a regex: 'freeze:backbone/(conv1|bn1|layer1)/.*'")
    try:
        re.compile(regex)
    except re.error as e:
        raise ValueError(f"strategy 'freeze:{regex}': bad regex ({e})") from None
    return Strategy(f"freeze:{regex}", [(regex, FROZEN), (".*", TRAINABLE)])


@register("freeze_first_k")
def freeze_first_k(arg: str) -> Strategy:
    """Freezes the stem and the first k stages (ResNet) / blocks (ViT) / encoder layers (BERT)."""
    k = number("freeze_first_k", arg, 1, int)

    def rules(paths):
        groups = depth_groups(paths)
        blocks = [g for g in groups if g[0].startswith("block")]
        if k > len(blocks):
            raise ValueError(f"freeze_first_k:{k} but the model has only {len(blocks)} blocks")
        frozen = [g for g in groups if g[0] == "stem"] + blocks[:k]
        return [(rx, FROZEN) for _, rx in frozen] + [(".*", TRAINABLE)]

    return Strategy(f"freeze_first_k:{k}", rules)


def depth_of(paths):
    """``[(regex, depth)]``: stem 0, blocks 1…L, top L+1 (the head is depth L+1 too)."""
    groups = depth_groups(paths)
    blocks = sum(g[0].startswith("block") for g in groups)
    depth = {"stem": 0, "top": blocks + 1}
    out, i = [], 0
    for name, rx in groups:
        if name.startswith("block"):
            i += 1
        out.append((rx, depth.get(name, i)))
    return out, blocks + 1


@register("llrd")
def llrd(arg: str) -> Strategy:
    """Layer-wise lr decay (ELECTRA, BEiT): lr × decay^(L+1−depth); the head gets lr × 1."""
    decay = number("llrd", arg, 0.75)
    if not 0 < decay <= 1:
        raise ValueError(f"llrd:{arg}: decay must be in (0, 1]")

    def lr_mults(paths):
        groups, top = depth_of(paths)
        return [(HEAD, 1.0)] + [(rx, decay ** (top - d)) for rx, d in groups]

    return Strategy(f"llrd:{decay:g}", EVERYTHING, lr_mults=lr_mults)


@register("gradual_unfreeze")
def gradual_unfreeze(arg: str) -> Strategy:
    """ULMFiT: head (and top norms) first, then one more block from the top every E epochs."""
    every = number("gradual_unfreeze", arg, 1.0)

    def start_epochs(paths):
        groups, top = depth_of(paths)
        return [(HEAD, 0.0)] + [(rx, every * (top - d)) for rx, d in groups]

    return Strategy(f"gradual_unfreeze:{every:g}", EVERYTHING, start_epochs=start_epochs)


@register("lp_ft")
def lp_ft(arg: str) -> Strategy:
    """Kumar et al. 2022: train the head alone for a fraction of the steps, then everything."""
    fraction = number("lp_ft", arg, 0.5)
    if not 0 <= fraction < 1:
        raise ValueError(f"lp_ft:{arg}: the linear-probe fraction must be in [0, 1)")
    return Strategy(f"lp_ft:{fraction:g}", EVERYTHING, lp_fraction=fraction)


@register("bitfit")
def bitfit(arg: str = "") -> Strategy:
    """Zaken et al. 2021: biases (including normalisation shifts) and the head."""
    return Strategy("bitfit", [(HEAD, TRAINABLE), (r".*/bias", TRAINABLE), (".*", FROZEN)])


@register("norm_only")
def norm_only(arg: str = "") -> Strategy:
    """Normalisation scales and shifts (BatchNorm, LayerNorm) and the head."""
    return Strategy("norm_only", [(HEAD, TRAINABLE), (NORM, TRAINABLE), (".*", FROZEN)])


LORA_TARGETS = {  # named target sets; anything else after ``targets=`` is a regex over parameter paths
    "qv": r"backbone/.*/(query|value)/kernel",
    "attention": r"backbone/.*/attention/(query|key|value|out)/kernel",
    "all_linear": r"backbone/.*/(query|key|value|out|\w*(mlp|fc|lin|intermediate|output|pwconv)\w*)/kernel",
}


@register("lora")
def lora(arg: str) -> Strategy:
    """Hu et al. 2021: rank-r adapters on chosen kernels, base frozen: ``lora:rank[,alpha][,targets=T]``.

    ``alpha`` defaults to the rank (scale α/r = 1). ``T`` is a name in ``LORA_TARGETS`` or a regex
    over parameter paths (default: attention query/value, else every convolution; ``tljax.lora``).
    """
    arg, _, targets = arg.partition("targets=")
    rank_arg, _, alpha_arg = arg.rstrip(",").partition(",")
    rank = number("lora", rank_arg.strip(), 8, int)
    alpha = number("lora", alpha_arg.strip(), float(rank))
    if rank < 1 or alpha <= 0:
        raise ValueError(f"lora:{arg}{'targets=' if targets else ''}{targets}: rank must be >= 1 and alpha > 0")
    if targets:
        targets = LORA_TARGETS.get(targets, targets)
        try:
            re.compile(targets)
        except re.error as e:
            raise ValueError(f"lora targets={targets!r}: bad regex ({e}); or use one of {sorted(LORA_TARGETS)}") from None
    rules = [(HEAD, TRAINABLE), (r".*/lora_[ab]", TRAINABLE), (".*", FROZEN)]
    name = f"lora:{rank}" + (f",{alpha:g}" if alpha != rank else "") + (f",targets={targets}" if targets else "")
    return Strategy(name, rules, lora=dict(rank=rank, alpha=alpha, targets=targets or None))


@register("l2sp")
def l2sp(arg: str) -> Strategy:
    """Li et al. 2018: everything trains, pulled towards the pretrained weights (α) and zero (β, head)."""
    alpha, _, beta = arg.partition(",")
    alpha, beta = number("l2sp", alpha, 0.01), number("l2sp", beta, 0.01)
    return Strategy(f"l2sp:{alpha:g},{beta:g}", EVERYTHING, l2sp=(alpha, beta))
