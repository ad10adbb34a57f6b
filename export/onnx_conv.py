"""`aten.convolution_backward` written as ops the ONNX exporter translates (it has none for it).

The input gradient is a transposed convolution (ONNX `ConvTranspose`, grouped convolutions
included); the weight gradient is, per kernel offset, the product of the output gradient with the
input window that offset saw (strided `Slice`s and a `MatMul`, or a `Mul` + `ReduceSum` for
depthwise convolutions), so nothing beyond default-domain operators is needed. Spatial sizes must
be static (image artifacts have a fixed size); the batch stays dynamic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def _output_padding(in_size: int, out_size: int, k: int, s: int, p: int, d: int) -> int:
    """What ConvTranspose needs to give back the forward input's size (strides drop a remainder)."""
    return in_size - ((out_size - 1) * s - 2 * p + d * (k - 1) + 1)


def conv2d_weight_grad(gy: torch.Tensor, x: torch.Tensor, weight_shape, stride, padding, dilation,
                       groups: int) -> torch.Tensor:
    """dL/dW of a 2-D convolution, one kernel offset at a time."""
    o, cin_g, kh, kw = weight_shape
    b = x.shape[0]
    ho, wo = gy.shape[-2:]
    if padding[0] or padding[1]:
        x = F.pad(x, [padding[1], padding[1], padding[0], padding[0]])
    depthwise = groups > 1 and cin_g == 1 and o == groups
    taps = []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            win = x[:, :, r0:r0 + stride[0] * (ho - 1) + 1:stride[0], c0:c0 + stride[1] * (wo - 1) + 1:stride[1]]
            if depthwise:
                taps.append((gy * win).sum((0, 2, 3)).reshape(o, 1))
                continue
            og = o // groups
            g = gy.reshape(b, groups, og, ho * wo).permute(1, 2, 0, 3).reshape(groups, og, -1)
            w = win.reshape(b, groups, cin_g, ho * wo).permute(1, 0, 3, 2).reshape(groups, -1, cin_g)
            taps.append(torch.bmm(g, w).reshape(o, cin_g))
    return torch.stack(taps, -1).reshape(o, cin_g, kh, kw)


def convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                         output_padding, groups, output_mask):
    if transposed or weight.dim() != 4:
        return NotImplemented  # only what the CNN stage plans use: 2-D, not transposed
    gx = gw = gb = None
    if output_mask[0]:
        op = [_output_padding(int(input.shape[2 + a]), int(grad_output.shape[2 + a]), int(weight.shape[2 + a]),
                              stride[a], padding[a], dilation[a]) for a in range(2)]
        gx = aten.convolution(grad_output, weight, None, stride, padding, dilation, True, op, groups)
    if output_mask[1]:
        gw = conv2d_weight_grad(grad_output, input, weight.shape, stride, padding, dilation, groups)
    if output_mask[2]:
        gb = grad_output.sum((0, 2, 3))
    return gx, gw, gb


DECOMPOSITIONS = {aten.convolution_backward.default: convolution_backward}
