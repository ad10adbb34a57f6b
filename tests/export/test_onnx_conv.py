"""The convolution-backward decomposition the `onnx` backend exports (it has no ONNX translation):
equal to autograd on the conv shapes a mobile CNN has — strided, padded, dilated, grouped,
depthwise, 1x1, with and without bias, odd sizes whose stride drops a remainder."""

import pytest
import torch
import torch.nn.functional as F

from rgft_edge.export.onnx_conv import convolution_backward

CASES = {  # (cin, cout, kernel, stride, padding, dilation, groups, bias, size)
    "3x3 stride 2, odd size": (3, 8, 3, 2, 1, 1, 1, False, 15),
    "1x1 pointwise with bias": (8, 12, 1, 1, 0, 1, 1, True, 9),
    "5x5 depthwise stride 2": (6, 6, 5, 2, 2, 1, 6, False, 14),
    "grouped 3x3, dilated": (8, 4, 3, 1, 2, 2, 2, True, 11),
    "3x3 no padding": (4, 5, 3, 1, 0, 1, 1, False, 8),
}


@pytest.mark.parametrize("case", CASES)
def test_matches_autograd(case):
    cin, cout, k, s, p, d, g, bias, size = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(2, cin, size, size + 1, requires_grad=True)  # non-square: rows and columns differ
    w = torch.randn(cout, cin // g, k, k, requires_grad=True)
    b = torch.randn(cout, requires_grad=True) if bias else None
    y = F.conv2d(x, w, b, s, p, d, g)
    gy = torch.randn_like(y)
    want = torch.autograd.grad(y, [x, w] + ([b] if bias else []), gy)
    got = convolution_backward(gy, x.detach(), w.detach(), [cout] if bias else None, [s, s], [p, p], [d, d],
                               False, [0, 0], g, [True, True, bias])
    for name, a, e in zip(("input", "weight", "bias"), got, want):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4, msg=f"{case}: grad {name}")


def test_transposed_convs_are_left_to_the_exporter():
    x, w = torch.randn(1, 2, 4, 4), torch.randn(2, 3, 3, 3)
    assert convolution_backward(x, x, w, None, [1, 1], [0, 0], [1, 1], True, [0, 0], 1,
                                [True, True, False]) is NotImplemented
