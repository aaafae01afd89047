"""Training-step throughput: forward + backward + AdamW in fp32, ours versus transformers'
LlamaForCausalLM holding the same weights, alternating repetitions, medians."""
import torch

from benchmarks.common import alternate, build_pair, median, training_flops_per_token


def make_step(model, batch: torch.Tensor, hf: bool, compile: bool = False, checkpointing: bool = False):
    """One optimizer step as each project runs it: ours through the engine's AdamW settings
    (no-decay groups), transformers' with torch's AdamW defaults, as its users do. With
    `compile`, the forward and backward run through `torch.compile(model)`, as the engine's
    `--compile` does (the optimizer stays eager in both). With `checkpointing`, each model's
    own activation checkpointing is switched on (ours: the engine's `--grad_checkpointing`;
    transformers: `gradient_checkpointing_enable()`)."""
    if checkpointing:  # transformers ≥ 5 renamed its switch; the old name warns
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    if hf:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    else:
        from minimind.train import TrainConfig, param_groups

        config = TrainConfig()  # the engine's defaults: decay groups, betas
        optimizer = torch.optim.AdamW(param_groups(model.named_parameters(), config.weight_decay),
                                      lr=1e-4, betas=(config.beta1, config.beta2),
                                      fused=batch.device.type == "cuda")
    model.train()
    forward = torch.compile(model) if compile else model

    def step():
        out = forward(input_ids=batch, labels=batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_train(preset: str, batch_size: int, seq_len: int, repeats: int = 5, compile: bool = False,
                checkpointing: bool = False) -> dict:
    """Tokens/s of both projects, eager; with `compile`, also both under torch.compile, and with
    `checkpointing`, both with activation checkpointing (each extra contender gets its own copy
    of the weights, so the contenders never share state)."""
    ours, theirs = build_pair(preset)
    vocab = ours.config.vocab_size
    batch = torch.randint(0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    contenders = {"ours": make_step(ours, batch, hf=False), "transformers": make_step(theirs, batch, hf=True)}
    if compile:
        ours_c, theirs_c = build_pair(preset)
        contenders["ours+compile"] = make_step(ours_c, batch, hf=False, compile=True)
        contenders["transformers+compile"] = make_step(theirs_c, batch, hf=True, compile=True)
    if checkpointing:
        ours_k, theirs_k = build_pair(preset)
        contenders["ours+ckpt"] = make_step(ours_k, batch, hf=False, checkpointing=True)
        contenders["transformers+ckpt"] = make_step(theirs_k, batch, hf=True, checkpointing=True)
    times = alternate(contenders, repeats=repeats, warmup=2 if compile else 1)
    tokens = batch_size * seq_len
    flops = training_flops_per_token(ours, seq_len) * tokens
    result = {"preset": preset, "batch": f"{batch_size}x{seq_len}"}
    for name, ts in times.items():
        result[name] = {"tokens_per_s": tokens / median(ts), "gflops": flops / median(ts) / 1e9}
    result["ratio"] = result["ours"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    if compile:
        result["ratio_compiled"] = result["ours+compile"]["tokens_per_s"] / result["transformers+compile"]["tokens_per_s"]
    if checkpointing:
        result["ratio_ckpt"] = result["ours+ckpt"]["tokens_per_s"] / result["transformers+ckpt"]["tokens_per_s"]
    return result


def make_sft_step(model, batch: torch.Tensor, labels: torch.Tensor, hf: bool, selected: bool):
    """One optimizer step on SFT-shaped data (labels −100 on the prompt): transformers computes
    the logits at every position; ours with `selected` only where a target exists
    (`supervised_lm_loss`, what `minimind.train.sft` runs), without it at every position."""
    from minimind.train import causal_lm_loss, supervised_lm_loss

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    data = {"input_ids": batch, "labels": labels}

    def step():
        if hf:
            loss = model(input_ids=batch, labels=labels).loss
        else:
            loss, _ = (supervised_lm_loss if selected else causal_lm_loss)(model, data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_sft_train(preset: str, batch_size: int, seq_len: int, prompt_share: float = 0.5, repeats: int = 5) -> dict:
    """Tokens/s of an SFT step whose first `prompt_share` of every sequence is unsupervised:
    ours computing logits only at the targets, ours at every position, transformers."""
    ours, theirs = build_pair(preset)
    ours_all, _ = build_pair(preset)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, ours.config.vocab_size, (batch_size, seq_len), generator=generator)
    labels = batch.clone()
    labels[:, : int(prompt_share * seq_len)] = -100
    contenders = {"ours": make_sft_step(ours, batch, labels, hf=False, selected=True),
                  "ours, every logit": make_sft_step(ours_all, batch, labels, hf=False, selected=False),
                  "transformers": make_sft_step(theirs, batch, labels, hf=True, selected=False)}
    times = alternate(contenders, repeats=repeats)
    tokens = batch_size * seq_len
    result = {"preset": preset, "batch": f"{batch_size}x{seq_len}", "prompt_share": prompt_share}
    for name, ts in times.items():
        result[name] = {"tokens_per_s": tokens / median(ts)}
    result["ratio"] = result["ours"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    result["ratio_every_logit"] = result["ours"]["tokens_per_s"] / result["ours, every logit"]["tokens_per_s"]
    return result
