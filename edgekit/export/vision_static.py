"""Qwen2.5-VL's vision tower rewritten for one fixed resolution and N images: static shapes only.

transformers' tower decides its structure at run time from `grid_thw` (window reorder from Python
loops, `cu_seqlens` splits), which no exporter can capture. Here everything that depends on the
grid is computed once, in numpy, by `plan_windows`, and the torch module only sees constants:

* layout: hidden states live in a padded window layout [windows, slots, hidden]. Each window holds
  up to (window_size / patch / merge)^2 merged units of merge^2 patches, in the same order as
  transformers' `get_vision_window_index`; windows cut by the image border are padded to the
  longest window with pad slots that no valid query may attend to (additive -inf-like mask).
  When every window is full there is no padding and no mask: attention is a plain batched op.
* full-attention blocks view the same buffer as [images, windows_per_image * slots, hidden];
  all windows of one image are contiguous, so this is a reshape, not a copy.
* rotary cos/sin are constants in the padded layout.
* two gathers with constant indices: processor patch order -> padded layout at the start, and
  padded merged units -> processor order before the merger (the inverse window index).

Numerics follow transformers: RMSNorm and rotary in float32, softmax in float32; with
`dtype=torch.float16` the linear layers run in half precision and those parts stay float32, except the blocks named in
`fp32_blocks`, which run wholly in float32 (their activations would not fit FP16: edgekit.export.vision_fp16_guard).
`tower.peaks` (a list, when set) records each block's largest |activation| in eager runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError

MASKED = -1e9  # additive score for pad keys; exp() underflows to exactly 0 in float32
RMS_EPS = 1e-6  # fixed in transformers' Qwen2.5-VL vision RMSNorm (not in config.json)


@dataclass(frozen=True)
class WindowPlan:
    """Where every patch of N same-size images sits in the padded window layout (all numpy)."""

    grid_h: int  # patches per column of one image
    grid_w: int
    images: int
    merge: int
    windows: int  # total over all images
    slots: int  # patches per padded window
    slot_source: np.ndarray  # int64 [windows*slots]: processor patch row of each slot, -1 for pad
    unit_order: np.ndarray  # int64 [units]: padded unit slot of each merged unit, in processor order
    positions: np.ndarray  # int64 [windows*slots, 2]: (row, col) patch coordinate for rotary (0 for pad)

    @property
    def patches(self) -> int:
        return self.images * self.grid_h * self.grid_w

    @property
    def units(self) -> int:
        return self.patches // (self.merge * self.merge)

    @property
    def ragged(self) -> bool:
        return bool((self.slot_source < 0).any())

    def key_valid(self) -> np.ndarray:
        """bool [windows, slots]: which slots hold a real patch."""
        return (self.slot_source >= 0).reshape(self.windows, self.slots)


def plan_windows(grid_h: int, grid_w: int, images: int, *, merge: int, window_size: int, patch: int) -> WindowPlan:
    """The padded window layout for `images` images of grid_h x grid_w patches each.

    Windows are ordered image by image, row-major over the window grid; inside a window, merged
    units are row-major, and each unit's merge^2 patches stay consecutive, as in transformers.
    """
    if grid_h % merge or grid_w % merge:
        raise EdgekitError(
            f"patch grid {grid_h}x{grid_w} is not a multiple of spatial_merge_size={merge}; "
            f"image sides must be multiples of {patch * merge} px"
        )
    side = window_size // merge // patch  # merged units per window side (4 for Qwen2.5-VL)
    if side < 1:
        raise EdgekitError(
            f"config.json vision_config: window_size={window_size} is smaller than one merged unit ({patch * merge} px)"
        )
    uh, uw = grid_h // merge, grid_w // merge  # merged-unit grid of one image
    m2 = merge * merge
    windows: list[np.ndarray] = []
    for img in range(images):
        unit_ids = img * uh * uw + np.arange(uh * uw).reshape(uh, uw)
        for r0 in range(0, uh, side):
            for c0 in range(0, uw, side):
                windows.append(unit_ids[r0 : r0 + side, c0 : c0 + side].reshape(-1))
    units_per_slot = max(len(w) for w in windows)
    unit_slot = np.full((len(windows), units_per_slot), -1, dtype=np.int64)  # [windows, units_per_slot]
    for i, w in enumerate(windows):
        unit_slot[i, : len(w)] = w
    flat_units = unit_slot.reshape(-1)  # [padded units]
    inner = np.arange(m2)
    slot_source = np.where(flat_units[:, None] >= 0, flat_units[:, None] * m2 + inner, -1).reshape(-1)  # [S]
    unit_order = np.empty(images * uh * uw, dtype=np.int64)
    valid = np.nonzero(flat_units >= 0)[0]
    unit_order[flat_units[valid]] = valid

    # Patch coordinates in the processor's block-major order: unit (r, c), inner (dh, dw).
    local = np.where(flat_units >= 0, flat_units % (uh * uw), 0)
    r, c = local // uw, local % uw  # [padded units]
    dh, dw = inner // merge, inner % merge  # [m2]
    rows = (r[:, None] * merge + dh).reshape(-1)
    cols = (c[:, None] * merge + dw).reshape(-1)
    positions = np.stack([rows, cols], axis=-1) * (slot_source >= 0)[:, None]  # [S, 2]
    return WindowPlan(
        grid_h,
        grid_w,
        images,
        merge,
        len(windows),
        units_per_slot * m2,
        slot_source,
        unit_order,
        positions.astype(np.int64),
    )


def rotary_tables(positions: np.ndarray, head_dim: int, theta: float):
    """cos, sin float32 [S, head_dim] for 2-D (row, col) positions, as transformers' axial rope.

    Frequencies over head_dim/2 (half for rows, half for columns), then repeated for rotate_half.
    """
    import torch

    spatial = head_dim // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, spatial, 2, dtype=torch.float) / spatial))  # [head_dim/4]
    pos = torch.from_numpy(positions).float()  # [S, 2]
    freqs = pos[..., None] * inv_freq  # [S, 2, head_dim/4]
    emb = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)  # [S, head_dim/2]
    emb = torch.cat([emb, emb], dim=-1)  # [S, head_dim]
    return emb.cos(), emb.sin()


def rms_norm(x, weight, eps: float = RMS_EPS):
    """RMSNorm computed in float32 (as transformers), result in x's dtype times the weight."""
    import torch

    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def attention(q, k, v, mask):
    """q, k, v [B, heads, S, d] (q already scaled); mask float32 [B, 1, 1, S] or None -> [B, heads, S, d].

    Scores and softmax in float32 (transformers does the softmax in float32 too).
    """
    import torch

    scores = torch.matmul(q, k.transpose(-1, -2)).float()  # [B, heads, S, S]
    if mask is not None:
        scores = scores + mask
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v)  # [B, heads, S, d]


def _activation(name: str):
    import torch.nn.functional as F

    table = {
        "silu": F.silu,
        "gelu": lambda x: F.gelu(x),
        "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "quick_gelu": lambda x: x * (1.702 * x).sigmoid(),
    }
    if name not in table:
        raise EdgekitError(
            f"config.json vision_config.hidden_act={name!r} is not supported; expected one of {sorted(table)}"
        )
    return table[name]


def vision_rope_theta(config: dict) -> float:
    vc = config.get("vision_config", {})
    rp = vc.get("rope_parameters") or vc.get("rope_scaling") or {}
    return float(rp.get("rope_theta", vc.get("rope_theta", 10000.0)))


def build_static_tower(checkpoint, plan: WindowPlan, dtype=None, fp32_blocks=()):
    """A torch module: patches float32 [plan.patches, patch_dim] -> embeddings float32 [plan.units, out_hidden].

    Weights come from the checkpoint one tensor at a time (canonical names), cast to `dtype` (float32 for the blocks
    in `fp32_blocks`).
    """
    import torch
    from torch import nn

    dtype = dtype or torch.float32
    wide = set(fp32_blocks)
    v = checkpoint.vision
    if v.temporal_patch < 1 or v.hidden != v.heads * v.head_dim:
        raise EdgekitError(f"{checkpoint.path}/config.json: vision hidden_size {v.hidden} != num_heads*head_dim")
    act = _activation(checkpoint.config.get("vision_config", {}).get("hidden_act", "silu"))
    theta = vision_rope_theta(checkpoint.config)
    fullatt = set(v.fullatt_blocks)

    def weight(name, as_dtype=None):
        return nn.Parameter(checkpoint.get(name).to(as_dtype or dtype), requires_grad=False)

    class StaticVisionTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_w = weight("visual.patch_embed.proj.weight").reshape(v.hidden, -1)  # [hidden, patch_dim]
            self.blocks = nn.ParameterList()
            self.names: list[str] = []
            for i in range(v.depth):
                p = f"visual.blocks.{i}."
                for n in (
                    "norm1.weight",
                    "norm2.weight",
                    "attn.qkv.weight",
                    "attn.qkv.bias",
                    "attn.proj.weight",
                    "attn.proj.bias",
                    "mlp.gate_proj.weight",
                    "mlp.gate_proj.bias",
                    "mlp.up_proj.weight",
                    "mlp.up_proj.bias",
                    "mlp.down_proj.weight",
                    "mlp.down_proj.bias",
                ):
                    self.blocks.append(weight(p + n, torch.float32 if i in wide else dtype))
            self.ln_q = weight("visual.merger.ln_q.weight")
            self.mlp0_w, self.mlp0_b = weight("visual.merger.mlp.0.weight"), weight("visual.merger.mlp.0.bias")
            self.mlp2_w, self.mlp2_b = weight("visual.merger.mlp.2.weight"), weight("visual.merger.mlp.2.bias")

            src = np.where(plan.slot_source >= 0, plan.slot_source, plan.patches)  # pad -> appended zero row
            self.register_buffer("slot_source", torch.from_numpy(src))
            self.register_buffer("unit_order", torch.from_numpy(plan.unit_order))
            cos, sin = rotary_tables(plan.positions, v.head_dim, theta)  # [S, d] float32
            self.register_buffer("cos", cos.reshape(plan.windows, plan.slots, 1, v.head_dim))
            self.register_buffer("sin", sin.reshape(plan.windows, plan.slots, 1, v.head_dim))
            valid = torch.from_numpy(plan.key_valid())  # [W, slots]
            bias = torch.where(valid, 0.0, MASKED).float()
            self.window_mask = bias[:, None, None, :] if plan.ragged else None  # [W, 1, 1, slots]
            self.full_mask = bias.reshape(plan.images, 1, 1, -1) if plan.ragged else None  # [N, 1, 1, W/N*slots]
            self.scale = v.head_dim**-0.5
            self.peaks: list[float] | None = None  # per block, when probing (eager only)

        def _probe(self, i: int, *tensors) -> None:
            if self.peaks is not None:
                self.peaks[i] = max([self.peaks[i]] + [float(t.detach().abs().max()) for t in tensors])

        def block(self, x, i: int):
            (n1, n2, qkv_w, qkv_b, proj_w, proj_b, g_w, g_b, u_w, u_b, d_w, d_b) = list(self.blocks)[
                12 * i : 12 * i + 12
            ]
            x = x.to(n1.dtype)  # a block kept in float32 takes and gives float32
            W, S, H = x.shape  # [windows, slots, hidden]
            qkv = torch.nn.functional.linear(rms_norm(x, n1), qkv_w, qkv_b).reshape(W, S, 3, v.heads, v.head_dim)
            q, k, val = qkv.unbind(2)  # each [W, S, heads, d]
            # rotary in float32 (transformers does the same), then back to the compute dtype
            q32, k32 = q.float(), k.float()
            q = ((q32 * self.cos + rotate_half(q32) * self.sin) * self.scale).to(x.dtype)
            k = (k32 * self.cos + rotate_half(k32) * self.sin).to(x.dtype)
            if i in fullatt:  # all windows of one image attend to each other
                shape, mask = (plan.images, -1, v.heads, v.head_dim), self.full_mask
            else:
                shape, mask = (W, S, v.heads, v.head_dim), self.window_mask
            q, k, val = (t.reshape(shape).transpose(1, 2) for t in (q, k, val))  # [B, heads, L, d]
            out = attention(q, k, val, mask).transpose(1, 2).reshape(W, S, H)
            x = x + torch.nn.functional.linear(out, proj_w, proj_b)
            h = rms_norm(x, n2)
            mlp = act(torch.nn.functional.linear(h, g_w, g_b)) * torch.nn.functional.linear(h, u_w, u_b)
            down = torch.nn.functional.linear(mlp, d_w, d_b)
            self._probe(i, x, mlp, down, x + down)
            return x + down

        def forward(self, patches):
            x = torch.matmul(patches.to(dtype), self.patch_w.t())  # [P, hidden] (the stride=kernel Conv3d)
            x = torch.cat([x, x.new_zeros(1, v.hidden)], dim=0)  # [P+1, hidden]; row P feeds pad slots
            x = x.index_select(0, self.slot_source).reshape(plan.windows, plan.slots, v.hidden)  # [W, slots, hidden]
            for i in range(v.depth):
                x = self.block(x, i)
            # after a block kept in float32 the stream may be wider than FP16: normalised in float32, then narrowed
            x = rms_norm(x, self.ln_q).to(dtype) if x.dtype == dtype else rms_norm(x, self.ln_q.float()).to(dtype)
            x = x.reshape(-1, v.hidden * v.merge * v.merge)  # [padded units, 4*hidden]
            x = x.index_select(0, self.unit_order)  # [units, 4*hidden] in processor order
            x = torch.nn.functional.gelu(torch.nn.functional.linear(x, self.mlp0_w, self.mlp0_b))
            return torch.nn.functional.linear(x, self.mlp2_w, self.mlp2_b).float()  # [units, out_hidden]

    return StaticVisionTower().eval()


def input_size(checkpoint, width: int, height: int) -> tuple[int, int]:
    """(height, width) the processor resizes a width x height image to (smart_resize, multiples of 28)."""
    from edgekit.model.processor import load_processor_config, smart_resize

    cfg = load_processor_config(checkpoint.path)
    return smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)


def plan_for_resolution(checkpoint, width: int, height: int, images: int = 1) -> tuple[WindowPlan, tuple[int, int]]:
    """Window plan for N images of width x height pixels, after the processor's resize.

    Returns the plan and the (height, width) every image must be resized to before patchifying.
    """
    if width <= 0 or height <= 0:
        raise EdgekitError(f"resolution {width}x{height}: width and height must be positive")
    if images < 1:
        raise EdgekitError(f"--images {images}: need at least one image")
    v = checkpoint.vision
    h, w = input_size(checkpoint, width, height)
    plan = plan_windows(h // v.patch, w // v.patch, images, merge=v.merge, window_size=v.window_size, patch=v.patch)
    return plan, (h, w)
