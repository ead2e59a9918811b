"""The grain pipeline: resumable, sharded per process, reshuffled per epoch, eval padded and masked."""

import numpy as np

from tljax.data import pipeline, text


def split(n=50, width=12):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, width + 1, n)
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
    return {"input_ids": np.arange(n)[:, None] * mask, "attention_mask": mask,
            "token_type_ids": np.zeros_like(mask), "label": np.arange(n, dtype=np.int32)}


def take(it, k):
    return [next(it) for _ in range(k)]


def test_resumed_iterator_yields_the_same_batches():
    data = split()
    straight = take(pipeline.train_iterator(data, 8, seed=3, buckets=(4, 8, 12)), 20)
    first = pipeline.train_iterator(data, 8, seed=3, buckets=(4, 8, 12))
    take(first, 9)
    state = first.get_state()
    resumed = take(pipeline.train_iterator(data, 8, seed=3, buckets=(4, 8, 12), state=state), 11)
    for a, b in zip(straight[9:], resumed):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(straight[0]["label"], straight[1]["label"])


def test_each_epoch_is_a_new_permutation_and_seeds_differ():
    data = split(40)
    labels = np.concatenate([b["label"] for b in take(pipeline.train_iterator(data, 8, seed=0), 10)])
    first, second = labels[:40], labels[40:]
    assert sorted(first) == sorted(second) == list(range(40))
    assert not np.array_equal(first, second)
    other = np.concatenate([b["label"] for b in take(pipeline.train_iterator(data, 8, seed=1), 5)])
    assert not np.array_equal(first, other)


def test_processes_read_disjoint_shares_of_the_global_batch_with_one_bucket():
    data = split(60)
    whole = take(pipeline.train_iterator(data, 12, seed=5, buckets=(4, 8, 12)), 6)
    shares = [take(pipeline.train_iterator(data, 12, seed=5, process_index=p, process_count=3,
                                           buckets=(4, 8, 12)), 6) for p in range(3)]
    for step, batch in enumerate(whole):
        parts = [s[step] for s in shares]
        assert all(len(p["label"]) == 4 for p in parts)
        np.testing.assert_array_equal(np.concatenate([p["label"] for p in parts]), batch["label"])
        # the bucket is chosen from the global batch: every process gets the same width
        assert {p["input_ids"].shape[1] for p in parts} == {batch["input_ids"].shape[1]}


def test_batches_are_cut_to_the_smallest_bucket_that_holds_them():
    data = split(200)
    widths = set()
    for batch in take(pipeline.train_iterator(data, 4, seed=0, buckets=(4, 8, 12)), 40):
        longest = batch["attention_mask"].sum(1).max()
        width = batch["input_ids"].shape[1]
        assert width == text.bucket_length([longest], (4, 8, 12))
        np.testing.assert_array_equal(batch["input_ids"], data["input_ids"][batch["label"], :width])
        widths.add(width)
    assert widths <= {4, 8, 12} and len(widths) >= 2


def test_eval_batches_cover_the_split_once_with_padding_masked():
    data = split(23)
    for count in (1, 2):
        seen = []
        for p in range(count):
            for batch in pipeline.eval_batches(data, 10, p, count):
                assert len(batch["label"]) == 10 // count
                seen += list(batch["label"][batch["mask"] > 0])
        assert sorted(seen) == list(range(23))


def test_random_access_sources_are_read_like_arrays():
    class Records:
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return {"image": np.full((2, 2, 1), i, np.uint8), "label": np.int32(i % 3)}

    batches = take(pipeline.train_iterator(Records(), 6, seed=0), 5)
    labels = np.concatenate([b["image"][:, 0, 0, 0] for b in batches])
    assert sorted(labels) == list(range(30))
    assert batches[0]["image"].shape == (6, 2, 2, 1) and batches[0]["image"].dtype == np.uint8


def test_loop_saves_the_iterator_state_with_the_checkpoint(runlocal_config, tmp_path):
    from tljax import checkpoint, data
    from tljax.train import loop

    config = runlocal_config
    config.num_steps, config.ckpt_every = 3, 0
    train, test, info = data.load_splits(config.data, config.seed)
    loop.fit(config, train, {k: v[:16] for k, v in test.items()}, info["num_classes"], str(tmp_path), "full_ft",
             info=info)
    mngr = checkpoint.manager(str(tmp_path / "ckpt"))
    assert checkpoint.restore_json(mngr, mngr.latest_step(), "data") == {"next_index": 3}
