"""Converts a checkpoint (registry name, .pth/.pt/.bin, .safetensors, .h5, .npz, Hugging Face folder)
into tljax's own .npz or .safetensors, with the arch and create() kwargs stored for pretrained.load.

    python scripts/convert_checkpoint.py resnet50-0676ba61.pth resnet50.safetensors
    python scripts/convert_checkpoint.py weights.pth out.npz --arch vit_b16 --source timm
"""

from __future__ import annotations

import argparse
import json
import time

from tljax import pretrained
from tljax.params import count


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="registry name, file or Hugging Face folder")
    parser.add_argument("output", help="destination .npz or .safetensors")
    parser.add_argument("--arch", help="model arch, when the key names do not tell it")
    parser.add_argument("--source", choices=["torchvision", "timm", "hf", "tljax"], help="key layout of the file")
    parser.add_argument("--config", help="Hugging Face config.json, for bare BERT weight files")
    args = parser.parse_args(argv)
    kwargs = {"config": json.loads(open(args.config).read())} if args.config else {}
    start = time.perf_counter()
    variables, arch, kwargs = pretrained.read_variables(args.checkpoint, args.arch, args.source, **kwargs)
    pretrained.save(args.output, variables, arch, **kwargs)
    print(f"{args.checkpoint} -> {args.output}: {arch}, {count(variables):,} floats, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
