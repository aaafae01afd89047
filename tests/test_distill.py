"""Distillation loss: its limits (alpha=1, student=teacher), the T² scaling, masks, errors,
and agreement with torch's own KL divergence."""
import pytest
import torch
import torch.nn.functional as F

from minimind.losses import distillation_loss, masked_cross_entropy

VOCAB = 37


def _batch(seed=0, batch=3, length=9, vocab=VOCAB):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=gen)
    teacher = torch.randn(batch, length, vocab, generator=gen) * 2.0
    labels = torch.randint(3, vocab, (batch, length), generator=gen)
    labels[:, :3] = -100  # a prompt that is not supervised
    labels[1, 6:] = -100  # padding after a short reply
    return student, teacher, labels


def test_kl_is_zero_when_student_equals_teacher():
    student, _, labels = _batch()
    for reverse in (False, True):
        for temperature in (0.5, 1.0, 4.0):
            _, metrics = distillation_loss(student, student.clone(), labels, 0.5, temperature, reverse=reverse)
            assert metrics["kl"].abs().item() < 1e-6


def test_kl_is_positive_when_student_differs_from_teacher():
    student, teacher, labels = _batch()
    for reverse in (False, True):
        _, metrics = distillation_loss(student, teacher, labels, 0.5, 2.0, reverse=reverse)
        assert metrics["kl"].item() > 0.01


def test_alpha_one_reduces_to_masked_cross_entropy():
    student, teacher, labels = _batch()
    loss, metrics = distillation_loss(student, teacher, labels, alpha=1.0, temperature=3.0)
    expected = masked_cross_entropy(student, labels)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["ce"], expected)


def test_alpha_zero_is_temperature_squared_kl_matching_torch_kl_div():
    student, teacher, labels = _batch()
    temperature = 2.5
    loss, _ = distillation_loss(student, teacher, labels, alpha=0.0, temperature=temperature)
    supervised = labels[:, 1:] != -100
    s = student[:, :-1][supervised] / temperature
    t = teacher[:, :-1][supervised] / temperature
    # torch's kl_div(input=log q, target=p) computes KL(p‖q); batchmean divides by the rows = tokens.
    reference = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True)
    torch.testing.assert_close(loss, temperature**2 * reference)


def test_reverse_kl_swaps_the_arguments():
    student, teacher, labels = _batch()
    supervised = labels[:, 1:] != -100
    s = F.log_softmax(student[:, :-1][supervised], -1)
    t = F.log_softmax(teacher[:, :-1][supervised], -1)
    _, metrics = distillation_loss(student, teacher, labels, 0.5, 1.0, reverse=True)
    expected = F.kl_div(t, s, reduction="batchmean", log_target=True)  # KL(student‖teacher)
    torch.testing.assert_close(metrics["kl"], expected)
    _, forward = distillation_loss(student, teacher, labels, 0.5, 1.0, reverse=False)
    assert abs(forward["kl"].item() - metrics["kl"].item()) > 1e-3


def _kl_gradient_norm(student, teacher, labels, temperature, scale_by_t_squared):
    student = student.clone().requires_grad_(True)
    loss, _ = distillation_loss(student, teacher, labels, alpha=0.0, temperature=temperature)
    if not scale_by_t_squared:
        loss = loss / temperature**2
    (grad,) = torch.autograd.grad(loss, student)
    return grad.norm().item()


def test_t_squared_factor_keeps_gradient_scale_across_temperatures():
    student, teacher, labels = _batch(length=12)
    teacher = teacher / 2.0  # logits of a scale where T=2..16 are all "soft"
    temperatures = (2.0, 4.0, 8.0, 16.0)
    with_factor = [_kl_gradient_norm(student, teacher, labels, t, True) for t in temperatures]
    without = [_kl_gradient_norm(student, teacher, labels, t, False) for t in temperatures]
    # With T²: the gradient tends to a finite limit (it changes by well under 2x over an 8x range of T).
    assert max(with_factor) / min(with_factor) < 1.3
    # Without it: the gradient falls like 1/T², i.e. ~64x over the same range.
    assert without[0] / without[-1] > 40
    # The high-temperature limit is known in closed form: T·(softmax(s/T) − softmax(t/T)) →
    # (centred s − centred t) / V per token, divided by the number of supervised tokens.
    supervised = labels[:, 1:] != -100
    s = student[:, :-1][supervised]
    t = teacher[:, :-1][supervised]
    centred = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    limit = (centred / VOCAB / supervised.sum()).norm().item()
    assert abs(with_factor[-1] - limit) / limit < 0.02


def test_only_supervised_positions_contribute():
    student, teacher, labels = _batch()
    loss, _ = distillation_loss(student, teacher, labels, alpha=0.3, temperature=2.0)
    # Changing any logit that predicts an unsupervised target must not change the loss.
    unsupervised = torch.nn.functional.pad(labels[:, 1:] == -100, (0, 1), value=True)  # last position predicts nothing
    noisy_student, noisy_teacher = student.clone(), teacher.clone()
    noisy_student[unsupervised] += 5.0 * torch.randn_like(noisy_student[unsupervised])
    noisy_teacher[unsupervised] += 5.0 * torch.randn_like(noisy_teacher[unsupervised])
    loss_noisy, _ = distillation_loss(noisy_student, noisy_teacher, labels, alpha=0.3, temperature=2.0)
    torch.testing.assert_close(loss, loss_noisy)
    # And the gradient there is exactly zero.
    student = student.clone().requires_grad_(True)
    distillation_loss(student, teacher, labels, alpha=0.3, temperature=2.0)[0].backward()
    assert student.grad[unsupervised].abs().max().item() == 0.0
    assert student.grad[~unsupervised].abs().max().item() > 0.0


def test_no_gradient_reaches_the_teacher():
    student, teacher, labels = _batch()
    teacher = teacher.clone().requires_grad_(True)
    student = student.clone().requires_grad_(True)
    distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)[0].backward()
    assert teacher.grad is None
    assert student.grad is not None


def test_different_vocabularies_raise_a_clear_error():
    student, teacher, labels = _batch()
    with pytest.raises(ValueError, match="vocabulary"):
        distillation_loss(student, teacher[..., :-5], labels)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"alpha": -0.1}, {"temperature": 0.0}])
def test_bad_hyperparameters_are_rejected(kwargs):
    student, teacher, labels = _batch()
    with pytest.raises(ValueError):
        distillation_loss(student, teacher, labels, **kwargs)


def test_a_batch_with_nothing_supervised_gives_zero_not_nan():
    student, teacher, labels = _batch()
    labels = torch.full_like(labels, -100)
    loss, _ = distillation_loss(student.requires_grad_(True), teacher, labels)
    assert loss.item() == 0.0
    loss.backward()


# ---------------------------------------------------------------------------------------------
# The stage: teacher and student of different shapes, the frozen teacher, the script.

CHATS = [
    [{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant", "content": f"{a + b}"}]
    for a, b in [(12, 7), (30, 45), (8, 9), (61, 22), (5, 5), (40, 13), (27, 27), (3, 90)]
]


@pytest.fixture(scope="module")
def tokenizer():
    from minimind.tokenizer import train_tokenizer

    return train_tokenizer([m["content"] for chat in CHATS for m in chat] * 4, vocab_size=300)


def _models(vocab, teacher_vocab=None):
    from minimind.config import get_config
    from minimind.model import MiniMind

    torch.manual_seed(0)
    teacher = MiniMind(get_config("tiny", vocab_size=teacher_vocab or vocab, hidden_size=96, num_hidden_layers=3))
    student = MiniMind(get_config("tiny", vocab_size=vocab, hidden_size=32, num_hidden_layers=1))
    return teacher, student


def _batch_of(tokenizer, tmp_path):
    import json

    from minimind.data.datasets import SFTDataset, collate_causal_lm

    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"conversations": c}) + "\n" for c in CHATS), encoding="utf-8")
    dataset = SFTDataset(path, tokenizer, max_seq_len=64)
    return path, collate_causal_lm([dataset[i] for i in range(4)])


def test_teacher_and_student_of_different_shapes_train_and_the_teacher_stays_frozen(tokenizer, tmp_path):
    from minimind.train.distill import distillation_loss_fn

    teacher, student = _models(tokenizer.vocab_size)
    teacher.train()  # the loss function must switch it to eval and freeze it
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    _, batch = _batch_of(tokenizer, tmp_path)
    loss_fn = distillation_loss_fn(teacher, alpha=0.5, temperature=2.0)
    assert not teacher.training
    loss, metrics = loss_fn(student, batch)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert set(metrics) == {"ce", "kl"} and metrics["kl"].item() > 0
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_stage_loss_matches_the_loss_on_the_two_models_logits(tokenizer, tmp_path):
    from minimind.train.distill import distillation_loss_fn

    teacher, student = _models(tokenizer.vocab_size)
    _, batch = _batch_of(tokenizer, tmp_path)
    loss, _ = distillation_loss_fn(teacher, alpha=0.3, temperature=1.5, reverse=True)(student, batch)
    with torch.no_grad():
        expected, _ = distillation_loss(student(batch["input_ids"]).logits, teacher(batch["input_ids"]).logits,
                                        batch["labels"], 0.3, 1.5, reverse=True)
    torch.testing.assert_close(loss, expected)


def test_a_teacher_with_another_vocabulary_is_refused_before_training(tokenizer, tmp_path):
    from minimind.train.distill import DistillConfig, run

    teacher, student = _models(tokenizer.vocab_size, teacher_vocab=tokenizer.vocab_size + 16)
    path, _ = _batch_of(tokenizer, tmp_path)
    config = DistillConfig(data_path=str(path), out_dir="", max_steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="vocabulary"):
        run(config, teacher=teacher, model=student)


def test_distill_script_trains_a_student_from_the_command_line(tokenizer, tmp_path):
    import json

    from minimind.checkpoint import load_model, save_model
    from minimind.train import distill

    teacher, _ = _models(tokenizer.vocab_size)
    teacher_dir = tmp_path / "teacher"
    save_model(teacher, teacher_dir)
    tokenizer.save(teacher_dir)
    path, _ = _batch_of(tokenizer, tmp_path)
    out = tmp_path / "student"
    argv = ["--teacher", str(teacher_dir), "--tokenizer", str(teacher_dir), "--preset", "tiny",
            "--data_path", str(path), "--out_dir", str(out), "--max_steps", "2", "--batch_size", "4",
            "--alpha", "0.2", "--temperature", "3", "--reverse_kl", "--progress", "false", "--log_interval", "1"]
    assert distill.main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and {"ce", "kl"} <= set(records[0])
    student = load_model(out)
    assert student.config.hidden_size == 64 and student.config.vocab_size == teacher.config.vocab_size
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["reverse_kl"] is True and saved["temperature"] == 3.0


def test_distill_help_lists_the_stage_options(capsys):
    from minimind.train import distill

    with pytest.raises(SystemExit) as exit_info:
        distill.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--teacher", "--alpha", "--temperature", "--reverse_kl"):
        assert flag in help_text


def test_hard_label_baseline_skips_the_teacher_and_equals_plain_cross_entropy(tokenizer, tmp_path):
    from minimind.train.distill import distillation_loss_fn
    from minimind.train import causal_lm_loss

    teacher, student = _models(tokenizer.vocab_size)
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    _, batch = _batch_of(tokenizer, tmp_path)
    loss, metrics = distillation_loss_fn(teacher, alpha=1.0, temperature=4.0)(student, batch)
    torch.testing.assert_close(loss, causal_lm_loss(student, batch)[0])
    assert calls == [] and set(metrics) == {"ce"}


def test_checks_accept_the_reference_and_reject_a_missing_temperature_factor(capsys):
    from minimind.checks.distill import check_distillation_loss, check_soft_targets

    check_soft_targets(lambda logits, t: torch.softmax(logits / t, dim=-1))
    check_distillation_loss(distillation_loss)
    assert capsys.readouterr().out.count("✓") == 2

    def without_t_squared(student, teacher, labels, alpha, temperature):
        loss, metrics = distillation_loss(student, teacher, labels, alpha, temperature)
        return alpha * metrics["ce"] + (1 - alpha) * metrics["kl"]

    with pytest.raises(AssertionError, match="T²"):
        check_distillation_loss(without_t_squared)
    with pytest.raises(AssertionError, match="divide the logits by T"):
        check_soft_targets(lambda logits, t: torch.softmax(logits, dim=-1))


def test_a_student_keeping_every_teacher_layer_is_the_teacher():
    from minimind.train.distill import student_from_teacher

    teacher, _ = _models(300)
    ids = torch.randint(0, 300, (2, 11))
    copy = student_from_teacher(teacher, [0, 1, 2])
    torch.testing.assert_close(copy(ids).logits, teacher(ids).logits)


def test_a_shallower_student_takes_the_chosen_teacher_layers():
    from minimind.train.distill import student_from_teacher

    teacher, _ = _models(300)
    student = student_from_teacher(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == teacher.config.hidden_size
    assert torch.equal(student.model.layers[1].self_attn.q_proj.weight, teacher.model.layers[2].self_attn.q_proj.weight)
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert student.lm_head.weight is student.model.embed_tokens.weight  # still tied, not two copies
    student.model.layers[0].mlp.up_proj.weight.data.add_(1.0)  # a copy: training it leaves the teacher alone
    assert not torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[0].mlp.up_proj.weight)
    for bad in ([], [0, 3], [1, 1]):
        with pytest.raises(ValueError, match="layers"):
            student_from_teacher(teacher, bad)


def test_distill_script_with_student_layers_and_a_row_limit(tokenizer, tmp_path):
    import json

    from minimind.checkpoint import load_model, save_model
    from minimind.train import distill

    teacher, _ = _models(tokenizer.vocab_size)
    teacher_dir = tmp_path / "teacher"
    save_model(teacher, teacher_dir)
    tokenizer.save(teacher_dir)
    path, _ = _batch_of(tokenizer, tmp_path)
    out = tmp_path / "student"
    argv = ["--teacher", str(teacher_dir), "--student_layers", "0,2", "--max_rows", "4", "--data_path", str(path),
            "--out_dir", str(out), "--epochs", "2", "--max_steps", "0", "--batch_size", "2", "--progress", "false",
            "--log_interval", "1"]
    assert distill.main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # 4 rows / batch 2 = 2 steps per epoch
    assert load_model(out).config.num_hidden_layers == 2


def test_distillation_terms_on_selected_rows_equal_the_loss_on_full_logits_and_check_shapes():
    from minimind.losses import distillation_terms, supervised_targets

    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 7, 11, generator=generator)
    labels = torch.randint(0, 11, (3, 7), generator=generator)
    labels[:, :3] = -100
    where, targets = supervised_targets(labels)
    for reverse in (False, True):
        full, full_parts = distillation_loss(student, teacher, labels, 0.4, 2.0, reverse=reverse)
        rows, row_parts = distillation_terms(student[where], teacher[where], targets, 0.4, 2.0, reverse=reverse)
        torch.testing.assert_close(rows, full)
        torch.testing.assert_close(row_parts["kl"], full_parts["kl"])
    with pytest.raises(ValueError, match=r"must be \(N, V\), \(N, V\), \(N,\)"):
        distillation_terms(student[where], teacher[where][:-1], targets)
    with pytest.raises(ValueError, match="temperature"):
        distillation_terms(student[where], teacher[where], targets, 0.5, 0.0)
    empty = student[where][:0].requires_grad_()
    loss, _ = distillation_terms(empty, empty.detach(), targets[:0])
    assert loss.item() == 0.0 and loss.requires_grad
