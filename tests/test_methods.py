"""Mechanisms of the methods beyond fine-tuning: gradient reversal, the distillation and DANN
losses, multi-task weights and per-task metrics, ratio mixing, and one end-to-end run."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tljax import models
from tljax.data.mixing import mix
from tljax.methods import adapt, distill, multitask
from tljax.models.heads import DomainAdversarial, MultiTask, grad_reverse
from tljax.losses import cross_entropy


def test_gradient_reversal_flips_sign_and_scales_by_lambda():
    x = jnp.arange(6.0).reshape(2, 3)
    w = jnp.asarray([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
    f = lambda x, lam: jnp.sum(grad_reverse(x, lam) * w)  # noqa: E731
    np.testing.assert_array_equal(grad_reverse(x, 0.7), x)
    for lam in (0.0, 0.25, 1.0, 3.0):
        np.testing.assert_allclose(jax.grad(f)(x, lam), -lam * w, rtol=0, atol=0)
    # traced λ under jit, and no gradient flows into λ itself
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x, jnp.float32(0.5)), -0.5 * w)
    assert float(jax.grad(f, argnums=1)(x, 0.5)) == 0.0


def test_ganin_schedule():
    assert float(adapt.ganin_lambda(0.0)) == 0.0
    np.testing.assert_allclose(float(adapt.ganin_lambda(1.0)), 2 / (1 + np.exp(-10)) - 1, rtol=1e-6)
    values = [float(adapt.ganin_lambda(p)) for p in np.linspace(0, 1, 11)]
    assert values == sorted(values) and values[-1] < 1.0


def test_distillation_loss_is_cross_entropy_when_alpha_is_one():
    rng = np.random.default_rng(0)
    student, teacher = (jnp.asarray(rng.normal(size=(16, 5)) * 3, jnp.float32) for _ in range(2))
    labels = jnp.asarray(rng.integers(0, 5, 16))
    loss, parts = distill.kd_loss(student, teacher, labels, alpha=1.0, temperature=4.0)
    assert float(loss) == float(cross_entropy(student, labels))
    assert float(parts["kl"]) > 0
    # α = 0: T²·KL(teacher_T ‖ student_T), against a numpy reference
    t = 2.0
    p = jax.nn.softmax(teacher / t)
    ref = t * t * np.mean(np.sum(p * (np.log(p) - jax.nn.log_softmax(student / t)), -1))
    np.testing.assert_allclose(float(distill.kd_loss(student, teacher, labels, 0.0, t)[0]), ref, rtol=1e-5)
    # the same log-softmax of the same logits on both sides: every term of the KL is exactly 0
    assert float(distill.kd_loss(student, student, labels, 0.0, t)[0]) == 0.0


def test_distillation_hook_uses_cached_logits_or_the_teacher():
    logits = jnp.asarray([[2.0, 0.0], [0.0, 1.0]])
    batch = {"label": jnp.asarray([0, 1]), "image": jnp.zeros((2, 1))}
    calls = []
    teacher = lambda b: calls.append(1) or jnp.asarray([[0.0, 3.0], [3.0, 0.0]])  # noqa: E731
    fn = distill.make_loss_fn(0.5, 2.0, teacher)
    uncached, _ = fn(logits, batch, 0)
    cached, _ = fn(logits, {**batch, "teacher_logits": jnp.asarray([[0.0, 3.0], [3.0, 0.0]])}, 0)
    assert len(calls) == 1 and float(cached) == float(uncached)


class Trunk(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.tanh(nn.Dense(4, name="dense")(x))


def test_dann_loss_reverses_only_the_trunk_gradient_by_lambda():
    model = DomainAdversarial(Trunk(), num_classes=3, hidden=5)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 3)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    batch = {"image": x, "label": jnp.asarray([0, 2, 0, 1, 0, 0, 0, 2]), "domain": jnp.asarray([1, 0] * 4)}
    total, step = 100, 30
    lam = float(adapt.ganin_lambda(step / total))
    loss_fn = adapt.make_loss_fn(total, 10.0, 1.0, 1.0)
    dann = jax.grad(lambda p: loss_fn(model.apply({"params": p}, x), batch, step)[0])(params)

    unreversed = model.clone(grl_lambda=-1.0)  # reversal by -1: plain back-propagation

    def plain(p):  # class CE + domain CE, no reversal anywhere
        out = unreversed.apply({"params": p}, x)
        src = (batch["domain"] == 0).astype(jnp.float32)
        return (cross_entropy(out["logits"], batch["label"], src)
                + cross_entropy(out["domain_logits"], batch["domain"]))

    def class_only(p):
        out = model.apply({"params": p}, x)
        return cross_entropy(out["logits"], batch["label"], (batch["domain"] == 0).astype(jnp.float32))

    ref, cls = jax.grad(plain)(params), jax.grad(class_only)(params)
    # Two graphs for the same gradients (reversal by -1, or by λ) sum the 8 examples' terms through 2 layers
    # in other orders: they agree to 8 x 2 roundings of the largest gradient (measured: 5 on AVX2).
    roundings = lambda *g: 16 * np.finfo(np.float32).eps * max(float(np.abs(x).max()) for x in g)  # noqa: E731
    for name in ("out", "hidden"):  # the domain classifier gets its full gradient
        np.testing.assert_allclose(dann["domain_head"][name]["kernel"], ref["domain_head"][name]["kernel"],
                                   rtol=0, atol=roundings(ref["domain_head"][name]["kernel"]))
    # the trunk: class gradient minus λ times the domain gradient
    domain_part = ref["backbone"]["dense"]["kernel"] - cls["backbone"]["dense"]["kernel"]
    np.testing.assert_allclose(dann["backbone"]["dense"]["kernel"],
                               cls["backbone"]["dense"]["kernel"] - lam * domain_part, rtol=0,
                               atol=roundings(ref["backbone"]["dense"]["kernel"], cls["backbone"]["dense"]["kernel"]))
    assert np.abs(domain_part).max() > 1e-4


def test_shifts_are_what_they_say():
    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(adapt.shift_images(images, "invert", 0), 1 - images)
    np.testing.assert_array_equal(adapt.shift_images(images, "rotate", 0)[:, :, :, 0],
                                  np.rot90(images[..., 0], axes=(1, 2)))
    noisy = adapt.shift_images(images, "noise", 0, noise=0.2)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, images)
    with pytest.raises(ValueError, match="allowed"):
        adapt.shift_images(images, "blur", 0)


def test_mix_follows_the_ratio_and_tags_parts():
    a = {"x": np.arange(10), "label": np.zeros(10, np.int32)}
    b = {"x": np.arange(100, 130), "label": np.ones(30, np.int32)}
    out = mix([a, b], (0.75, 0.25), seed=0, total=80)
    assert np.bincount(out["task"]).tolist() == [60, 20]
    xs = out["x"][out["task"] == 0]
    assert set(xs) == set(range(10)) and np.bincount(xs).tolist() == [6] * 10  # whole passes
    assert np.all(out["label"] == out["task"])
    assert np.bincount(mix([a, b], (1.0, 0.0), 0)["task"], minlength=2).tolist() == [40, 0]


def test_multitask_loss_weights_and_per_task_metrics():
    logits = {"digit": jnp.asarray([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
              "parity": jnp.asarray([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0]])}
    batch = {"task": jnp.asarray([0, 0, 1, 1]), "label": jnp.asarray([0, 1, 0, 0])}
    loss, m = multitask.make_loss_fn(["digit", "parity"], [2.0, 0.5])(logits, batch, 0)
    ce_d = cross_entropy(logits["digit"][:2], batch["label"][:2])
    ce_p = cross_entropy(logits["parity"][2:], batch["label"][2:])
    np.testing.assert_allclose(float(loss), 2.0 * float(ce_d) + 0.5 * float(ce_p), rtol=1e-6)
    assert float(m["digit/accuracy"]) == 0.5 and float(m["parity/accuracy"]) == 0.5
    assert float(m["accuracy"]) == 0.5

    # weight 0: the task's head gets no gradient; the other head does
    model = MultiTask(Trunk(), (("digit", 3), ("parity", 2)))
    x = jnp.ones((4, 3))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    assert sorted(params["head"]) == ["digit", "parity"]
    grads = jax.grad(lambda p: multitask.make_loss_fn(["digit", "parity"], [1.0, 0.0])(
        model.apply({"params": p}, x), batch, 0)[0])(params)
    assert optax.tree.norm(grads["head"]["parity"]) == 0 and optax.tree.norm(grads["head"]["digit"]) > 0
    np.testing.assert_array_equal(model.clone(task="parity").apply({"params": params}, x),
                                  model.apply({"params": params}, x)["parity"])


def test_multitask_run_reports_each_task(tmp_path):
    from tljax.config import load_file
    from tljax.run import run as run_job

    config = load_file("configs/multitask_digits.py:runlocal")
    config.tasks.parity.weight = 0.5
    out = run_job(config, str(tmp_path))["scratch"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert set(saved["tasks"]) == {"digit", "parity"}
    assert saved["tasks"]["parity"]["weight"] == 0.5 and saved["tasks"]["digit"]["test_examples"] == 539
    assert saved["accuracy"] == saved["tasks"]["digit"]["accuracy"] == out["accuracy_digit"]
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert {"digit/loss", "parity/loss", "digit/accuracy", "parity/accuracy"} <= set(logged)


def test_models_registry_knows_the_new_heads():
    assert "bag_of_embeddings" in models.BACKBONES


def test_as_images_maps_two_digit_sets_to_one_input_space():
    grey = {"image": np.full((3, 28, 28, 1), 255, np.uint8), "label": np.arange(3)}
    colour = [{"image": np.full((32, 32, 3), c, np.uint8), "label": np.int32(i)} for i, c in enumerate((0, 255))]
    a, b = adapt.as_images(grey, 32, 1), adapt.as_images(colour, 32, 1)
    assert a["image"].shape == (3, 32, 32, 1) and b["image"].shape == (2, 32, 32, 1)
    assert a["image"].dtype == np.float32 and np.allclose(a["image"], 1.0)
    np.testing.assert_allclose(b["image"][:, 0, 0, 0], [0.0, 1.0], atol=1e-6)
    assert b["label"].tolist() == [0, 1]
    assert adapt.as_images(grey, 16, 3)["image"].shape == (3, 16, 16, 3)


def test_dann_mnist_to_svhn_config_runs_on_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tljax.config import load_file
    from tljax.run import run as run_job

    config = load_file("configs/dann_mnist_svhn.py:runlocal")
    with tfds.testing.mock_data(num_examples=16):
        out = run_job(config, str(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "dann" and summary["target"] == "tfds:svhn_cropped"
    assert summary["test_examples"] == 16 and summary["train_examples"] == 32  # 16 MNIST + 16 unlabelled SVHN
    assert 0.0 <= summary["target_accuracy"] <= 1.0 and "source_accuracy" in summary
    assert out


def test_dann_refuses_a_target_with_another_label_space(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tljax.config import load_file
    from tljax.run import run as run_job

    config = load_file("configs/dann_mnist_svhn.py:runlocal")
    config.adapt.target.source = "tfds:emnist/letters"
    with tfds.testing.mock_data(num_examples=16), pytest.raises(ValueError, match="same label space"):
        run_job(config, str(tmp_path))


@pytest.mark.parametrize("config, method", [("configs/distill_digits.py:runlocal", "distill"),
                                            ("configs/dann_digits.py:runlocal", "dann"),
                                            ("configs/multitask_digits.py:runlocal", "multitask")])
def test_each_method_runs_through_the_cli(tmp_path, config, method):
    from conftest import run_train

    result = run_train(tmp_path, config=config)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary.get("method") == method, result.stdout[-2000:]
    assert summary["num_steps"] == 6 and 0.0 <= summary["accuracy"] <= 1.0
    if method == "distill":  # the teacher trained first, in its own workdir, and its accuracy is reported
        teacher = json.loads((tmp_path / "teacher" / "summary.json").read_text())
        assert summary["teacher_accuracy"] == teacher["accuracy"] and teacher["num_steps"] == 8
    if method == "dann":
        assert summary["target"] == "shift:invert" and "source_accuracy" in summary
    if method == "multitask":
        assert set(summary["tasks"]) == {"digit", "parity"}
