"""Time the TLPO update phase: one forward pass per prefix against one per candidate.

The update phase of a TLPO step takes a mined batch: confusion points, each with K
explored candidates and their advantages. It computes the policy's and the reference
model's log-probabilities of the candidates at the update positions, then the loss and
its gradient. Both ways below compute the same loss and gradients, on identical batches:

- one prefix: `tlpo.losses.candidate_logprobs`, one forward pass of the right-padded
  prefixes per model, with logits only at the update positions.
- per candidate: `tlpo.losses.plain_candidate_logprobs`, as in the authors' reference
  implementation: for each candidate, every prefix plus that candidate, right-padded to
  the maximum rollout length (prompt plus `--max-new-tokens`), with full logits. The
  backward pass runs after each candidate (gradient accumulation) so that memory stays
  at one candidate's activations; the summed gradient is the same.

The model is a randomly initialised Llama, because speed does not depend on the weights.
Confusion points sit uniformly in the response, as first confusion points of sampled
responses do when confusion is equally likely anywhere. Forward FLOPs are an estimate:
2 x (transformer-block parameters) x (tokens processed) + 2 x (output-projection
parameters) x (positions whose logits are computed), which ignores attention-score FLOPs
and the backward pass. Wall time covers forward passes, loss and backward for both
models. The script prints process CPU time too, because other programs sharing the
cores affect it less. The script checks that both ways give the same loss and gradients, and its last
line is `speedup: <per-candidate wall time / one-prefix wall time>`.

Usage:
    python benchmarks/update_speed.py                  # K=16, 4 points, a 5 M-parameter Llama
    python benchmarks/update_speed.py --k 8 --hidden-size 512 --num-layers 8
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tlpo.losses import candidate_logprobs, plain_candidate_logprobs, tlpo_loss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=16, help="candidates per confusion point (default 16)")
    parser.add_argument("--num-points", type=int, default=2, help="confusion points in the mined batch (default 2)")
    parser.add_argument(
        "--min-prompt-tokens", type=int, default=30, help="minimum prompt length in tokens (default 30)"
    )
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=150, help="maximum prompt length in tokens (default 150)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=512, help="maximum rollout length in new tokens (default 512)"
    )
    parser.add_argument("--hidden-size", type=int, default=192, help="model width (default 192)")
    parser.add_argument("--num-layers", type=int, default=4, help="transformer blocks (default 4)")
    parser.add_argument("--num-heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--vocab-size", type=int, default=8000, help="vocabulary size (default 8000)")
    # One thread gives the most repeatable ratio on a shared machine: with two threads
    # and other jobs on the same two cores, CPU time per run grew fourfold.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs of the one-prefix way, reporting the median (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the model and the mined batch (default 0)")
    return parser.parse_args()


def build_model(args: argparse.Namespace, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=int(args.hidden_size * 8 / 3 / 64 + 1) * 64,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_heads,
        max_position_embeddings=args.max_prompt_tokens + args.max_new_tokens + 8,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).float()


def mine_batch(args: argparse.Namespace, policy: LlamaForCausalLM):
    """Return right-padded prefixes, update positions, candidates, old log-probs, advantages."""
    generator = torch.Generator().manual_seed(args.seed + 1)
    prompt_lengths = torch.randint(
        args.min_prompt_tokens, args.max_prompt_tokens + 1, (args.num_points,), generator=generator
    )
    # The confusion token is response token c (0-based), so the prefix ends one before it.
    confusion_offsets = torch.randint(1, args.max_new_tokens, (args.num_points,), generator=generator)
    lengths = (prompt_lengths + confusion_offsets).tolist()
    width = max(lengths)
    input_ids = torch.zeros((args.num_points, width), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1, args.vocab_size, (length,), generator=generator)
        attention_mask[row, :length] = 1
    positions = torch.tensor(lengths) - 1
    with torch.no_grad():
        logits = policy(input_ids=input_ids, attention_mask=attention_mask).logits
        probs = torch.softmax(logits[torch.arange(args.num_points), positions], dim=-1)
    top_probs, candidates = probs.topk(args.k, dim=-1)
    rewards = torch.where(torch.rand(top_probs.shape, generator=generator) < 0.5, 1.0, -1.0)
    rewards[:, 0] = -1.0  # the sampled wrong-language token is usually the most probable
    baseline = (top_probs * rewards).sum(-1, keepdim=True) / top_probs.sum(-1, keepdim=True)
    weighted = top_probs * (rewards - baseline)
    advantage = weighted / weighted.abs().sum(-1, keepdim=True)
    return (input_ids, attention_mask, positions), candidates, top_probs.log(), advantage, lengths


def run_one_prefix(policy, reference, batch, candidates, logp_old, advantage):
    policy.zero_grad(set_to_none=True)
    logp = candidate_logprobs(policy, *batch, candidates)
    with torch.no_grad():
        logp_ref = candidate_logprobs(reference, *batch, candidates)
    loss, _ = tlpo_loss(logp, logp_old, logp_ref, advantage)
    loss.backward()
    return loss.detach()


def run_per_candidate(policy, reference, batch, candidates, logp_old, advantage, pad_to):
    policy.zero_grad(set_to_none=True)
    total = torch.zeros(())
    num_items = candidates.numel()
    for k in range(candidates.shape[1]):
        column = candidates[:, [k]]
        logp = plain_candidate_logprobs(policy, *batch, column, pad_to=pad_to)
        with torch.no_grad():
            logp_ref = plain_candidate_logprobs(reference, *batch, column, pad_to=pad_to)
        loss, _ = tlpo_loss(logp, logp_old[:, [k]], logp_ref, advantage[:, [k]], num_items=num_items)
        loss.backward()
        total += loss.detach()
    return total


def timed(function, *args):
    """Call `function(*args)`; return its result, wall seconds and process CPU seconds."""
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall_start, time.process_time() - cpu_start


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    policy = build_model(args, args.seed)
    reference = build_model(args, args.seed + 100)
    reference.requires_grad_(False)

    batch, candidates, logp_old, advantage, lengths = mine_batch(args, policy)
    pad_to = args.max_prompt_tokens + args.max_new_tokens
    output_parameters = policy.lm_head.weight.numel()
    block_parameters = sum(parameter.numel() for parameter in policy.model.layers.parameters())
    total_parameters = sum(parameter.numel() for parameter in policy.parameters())

    def flops(tokens: int, logit_rows: int) -> float:
        return 2 * block_parameters * tokens + 2 * output_parameters * logit_rows

    # One untimed run warms up the allocator and kernels. The one-prefix way is short,
    # so it runs --repeats times and reports the median; the per-candidate way runs once.
    run_one_prefix(policy, reference, batch, candidates, logp_old, advantage)
    fast_runs = [
        timed(run_one_prefix, policy, reference, batch, candidates, logp_old, advantage) for _ in range(args.repeats)
    ]
    fast_loss, fast_seconds, fast_cpu_seconds = sorted(fast_runs, key=lambda run: run[1])[len(fast_runs) // 2]
    fast_grads = gradients(policy)

    plain_loss, plain_seconds, plain_cpu_seconds = timed(
        run_per_candidate, policy, reference, batch, candidates, logp_old, advantage, pad_to
    )
    plain_grads = gradients(policy)

    num_points, width = batch[0].shape
    fast_tokens = 2 * num_points * width  # policy and reference
    fast_logit_rows = 2 * num_points
    plain_tokens = 2 * args.k * num_points * pad_to
    plain_logit_rows = plain_tokens

    grad_difference = max((fast_grads[name] - plain_grads[name]).abs().max().item() for name in fast_grads)
    grad_scale = max(plain_grads[name].abs().max().item() for name in plain_grads)

    print(
        f"update phase: {num_points} confusion points x K={args.k} candidates; Llama with "
        f"{total_parameters / 1e6:.1f} M parameters ({args.num_layers} layers, hidden {args.hidden_size}, "
        f"vocab {args.vocab_size}), fp32, {args.threads} CPU threads"
    )
    print(
        f"prefix lengths {min(lengths)}..{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}); "
        f"per-candidate sequences padded to {pad_to}"
    )
    print(f"{'method':<15}{'wall s':>9}{'CPU s':>9}{'fwd tokens':>12}{'logit rows':>12}{'fwd GFLOPs (est.)':>19}")
    for name, seconds, cpu_seconds, tokens, rows in (
        ("one prefix", fast_seconds, fast_cpu_seconds, fast_tokens, fast_logit_rows),
        ("per candidate", plain_seconds, plain_cpu_seconds, plain_tokens, plain_logit_rows),
    ):
        print(
            f"{name:<15}{seconds:>9.3f}{cpu_seconds:>9.3f}{tokens:>12,}{rows:>12,}{flops(tokens, rows) / 1e9:>19,.1f}"
        )
    print(
        f"loss {fast_loss.item():.6g} vs {plain_loss.item():.6g}; max |gradient difference| "
        f"{grad_difference:.2e} (largest gradient entry {grad_scale:.2e})"
    )
    print(f"FLOPs ratio (est.): {flops(plain_tokens, plain_logit_rows) / flops(fast_tokens, fast_logit_rows):.1f}")
    losses_agree = torch.allclose(fast_loss, plain_loss, rtol=1e-4, atol=1e-6)
    if not losses_agree or grad_difference > 1e-4 * max(grad_scale, 1e-8):
        raise SystemExit("error: the two ways disagree on the loss or the gradients")
    print(f"speedup: {plain_seconds / fast_seconds:.1f}")


if __name__ == "__main__":
    main()
