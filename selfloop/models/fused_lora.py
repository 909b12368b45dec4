"""LoRA's update added to the frozen layer's output in one matmul while training.

peft's plain LoRA computes `result + lora_B(lora_A(dropout(x))) * scaling`: the update is written out at the
layer's full width, scaled in another pass and added in a third (and the backward pass repeats the scaling).
For the demo's MLP projections (1,536 wide, rank 16) those passes took about a quarter of a training step on
the CPU. Here the scaling goes on the rank-wide intermediate and `addmm` accumulates `h @ B^T` into the output:
the same function of the same parameters (rounding aside), so checkpoints, merging and peft's saving are
unchanged. It is installed through peft's own extension point for LoRA forms (`lora_variant`, which DoRA uses)
on the training model only.
"""

from __future__ import annotations

from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora.layer import LoraVariant


class AddmmLora(LoraVariant):
    """Plain LoRA, y = base(x) + s * B A dropout(x), computed as addmm(base(x), s * A dropout(x), B^T)."""

    @staticmethod
    def init(module: LoraLinear, adapter_name: str, **kwargs: Any) -> None:
        pass

    @staticmethod
    def forward(module: LoraLinear, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        down = module.lora_A[active_adapter](module.lora_dropout[active_adapter](x)) * module.scaling[active_adapter]
        up = module.lora_B[active_adapter].weight
        # A bf16 base with float32 adapters (peft's default on GPUs) adds in float32, as peft's own sum does.
        flat = result.reshape(-1, result.shape[-1]).to(down.dtype)
        return torch.addmm(flat, down.reshape(-1, down.shape[-1]), up.t()).view(*result.shape[:-1], up.shape[0])


def is_plain_lora(module: LoraLinear, name: str) -> bool:
    """Whether adapter `name` of this layer is plain LoRA (no variant such as DoRA, no LoRA bias): the form
    that W + s * B A describes, which the addmm form and merged decoding (engines.hf) both rely on."""
    return name not in module.lora_variant and not module.lora_bias.get(name)


def use_addmm_updates(model: torch.nn.Module) -> None:
    """Give every plain LoRA linear layer of `model` the addmm form."""
    for module in model.modules():
        if isinstance(module, LoraLinear):
            for name in module.lora_A:
                if is_plain_lora(module, name):
                    module.lora_variant[name] = AddmmLora()
