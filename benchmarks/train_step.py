"""Training-step throughput: forward + backward + AdamW in fp32, ours versus transformers'
LlamaForCausalLM holding the same weights, alternating repetitions, medians."""
import torch

from benchmarks.common import alternate, build_pair, median, training_flops_per_token


def make_step(model, batch: torch.Tensor, hf: bool):
    """One optimizer step as each project runs it: ours through the engine's AdamW settings
    (no-decay groups), transformers' with torch's AdamW defaults, as its users do."""
    if hf:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    else:
        from minimind.train.engine import TrainConfig, param_groups

        config = TrainConfig()  # the engine's defaults: decay groups, betas
        optimizer = torch.optim.AdamW(param_groups(model.named_parameters(), config.weight_decay),
                                      lr=1e-4, betas=(config.beta1, config.beta2),
                                      fused=batch.device.type == "cuda")
    model.train()

    def step():
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_train(preset: str, batch_size: int, seq_len: int, repeats: int = 5) -> dict:
    ours, theirs = build_pair(preset)
    vocab = ours.config.vocab_size
    batch = torch.randint(0, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
    times = alternate({"ours": make_step(ours, batch, hf=False), "transformers": make_step(theirs, batch, hf=True)},
                      repeats=repeats, warmup=1)
    tokens = batch_size * seq_len
    flops = training_flops_per_token(ours, seq_len) * tokens
    result = {"preset": preset, "batch": f"{batch_size}x{seq_len}"}
    for name, ts in times.items():
        result[name] = {"tokens_per_s": tokens / median(ts), "gflops": flops / median(ts) / 1e9}
    result["ratio"] = result["ours"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    return result
