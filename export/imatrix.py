"""Importance matrix for quantization: which input columns of each weight matter, measured on the student's data.

llama.cpp's quantizers take, per weight matrix, one importance per input column and minimise the importance-
weighted rounding error instead of the plain one (`llama-imatrix` computes it; K-quants and Q5_0 both use it).
The importance of column j is the mean of x_j^2 over calibration tokens, x being the matrix's input: exactly what
`llama-imatrix` accumulates (its sums divided by its counts). We compute it with PyTorch forward hooks on the merged
student, over the student's own training conversations, so the columns its answers use are rounded most carefully.
llama.cpp finds each matrix by its GGUF tensor name, which gguf-py's name map gives for every HF module name.
"""
from __future__ import annotations

import ctypes

import numpy as np
import torch
from tqdm import tqdm


@torch.inference_mode()
def collect_importance(model, token_rows: list[list[int]], batch_size: int = 16) -> dict[str, np.ndarray]:
    """{HF module name: mean of squared inputs per input column} over every real token of every row."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    real = {}                                       # the current batch's (rows, positions) mask: padding excluded
    hooks = []

    def hook_for(name):
        def hook(module, inputs):
            x = inputs[0].detach().float()
            x = x[real["mask"]] if x.dim() == 3 else x.reshape(-1, x.shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return hook

    head = model.get_output_embeddings()
    head_name = next((name for name, module in model.named_modules() if module is head), None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            hooks.append(module.register_forward_pre_hook(hook_for(name)))
    try:
        for start in tqdm(range(0, len(token_rows), batch_size), desc="importance matrix", unit="batch",
                          leave=False):
            rows = token_rows[start:start + batch_size]
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            real["mask"] = mask.bool()
            # The decoder alone: the output head's input is its last hidden state, so the head's importance comes
            # from that, without computing vocabulary-wide logits (a fifth of the forward) nobody reads.
            hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
            if head_name:
                hook_for(head_name)(None, (hidden,))
    finally:
        for h in hooks:
            h.remove()
    return {name: (sums[name] / counts[name]).numpy().astype(np.float32) for name in sums}


def gguf_names(importance: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Rename HF modules to the GGUF tensor names llama.cpp's converter gives them
    (`model.layers.0.mlp.down_proj` -> `blk.0.ffn_down.weight`), from the model's HF config alone (reading the GGUF
    back would parse its whole vocabulary). A tied output head lives in `token_embd.weight`, so its importance goes
    there. Names llama.cpp does not find are ignored by it; an architecture gguf-py does not know gives {}."""
    import gguf
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(config.model_type)
    if arch is None:
        return {}
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    renamed = {}
    for hf_name, values in importance.items():
        base = name_map.get_name(hf_name)
        if base is None:
            continue
        if base == "output" and getattr(config, "tie_word_embeddings", False):
            base = "token_embd"
        renamed[base + ".weight"] = values
    return renamed


def as_llama_imatrix(importance: dict[str, np.ndarray]):
    """The `llama_model_imatrix_data` array llama_model_quantize reads (terminated by a NULL name). Returns it with the
    buffers it points into: keep both alive until quantization ends."""
    import llama_cpp
    entries = (llama_cpp.llama_model_imatrix_data * (len(importance) + 1))()
    keep = []
    for i, (name, values) in enumerate(sorted(importance.items())):
        values = np.ascontiguousarray(values, dtype=np.float32)
        encoded = name.encode()
        keep += [values, encoded]
        entries[i].name = encoded
        entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = values.size
    entries[len(importance)].name = None
    return entries, keep
