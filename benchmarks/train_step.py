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
        from minimind.train.engine import TrainConfig, param_groups

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
