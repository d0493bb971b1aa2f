"""The CIFAR networks of paper §3.5 / Table 6, against hand counts, hand forwards and naive float64 oracles."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encnet.models.cifar import (
    CifarResNet,
    EncodingAttention,
    EncodingDrop,
    PostActBlock,
    PreActBlock,
    build_cifar_model,
    count_parameters,
    model_summary,
)
from encnet.nn.encoding import Encoding


@pytest.fixture(autouse=True)
def _small_cpu():
    torch.set_num_threads(2)
    torch.manual_seed(0)


# --- hand count of the layers (paper §3.5, PAPER.md §7), independent of the model's code -------------------------
def conv(k, cin, cout, bias=False):  # no bias where a BN follows
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):
    return 2 * c


def fc(cin, cout):
    return cin * cout + cout


def attention_count(kind, c, k):
    if kind == "none":
        return 0
    if kind == "se":  # pool → FC C→C/16 → ReLU → FC C/16→C (reduction 16, §3.5)
        return fc(c, c // 16) + fc(c // 16, c)
    d = c // 4  # conv1×1 C→D, BN, Encoding codewords K·D (smoothing factors drawn, not learned), FC K·D → C
    return conv(1, c, d) + bn(d) + k * d + fc(k * d, c)


def block_count(cin, cout, stride, kind, k, block):
    # pre-activation: BN on the block's input width, then on the output; post-activation: both on the output.
    norms = bn(cin) + bn(cout) if block == "preact" else 2 * bn(cout)
    count = conv(3, cin, cout) + conv(3, cout, cout) + norms + attention_count(kind, cout, k)
    if stride != 1 or cin != cout:
        count += conv(1, cin, cout, bias=True)  # the release's projection: 1×1 conv with bias, no BN
    return count


def hand_count(widen, kind, k, block="preact", classes=10):
    c1, c2, c3 = 16 * widen, 32 * widen, 64 * widen
    total = conv(3, 3, c1) + bn(c1)
    for cin, cout, stride in ((c1, c1, 1), (c1, c2, 2), (c2, c3, 2)):
        total += block_count(cin, cout, stride, kind, k, block) + block_count(cout, cout, 1, kind, k, block)
    return total + bn(c3) + fc(c3, classes)


TABLE6 = [  # name, widen, attention, K, parameters reported in Table 6 (millions)
    ("ResNet-64d", 4, "none", 32, 2.7),
    ("SE-ResNet-64d", 4, "se", 32, 2.8),
    ("EncNet-16k64d", 4, "encoding", 16, 3.5),
    ("EncNet-32k128d", 8, "encoding", 32, 16.8),
]


@pytest.mark.parametrize("block", ["preact", "postact"])
@pytest.mark.parametrize("name, widen, kind, k, reported", TABLE6)
def test_parameter_count_matches_hand_count_and_table6(name, widen, kind, k, reported, block):
    with torch.device("meta"):  # shapes only: the 128d model is not allocated
        model = build_cifar_model(name, block=block)
    expected = hand_count(widen, kind, k, block)
    assert count_parameters(model) == expected
    assert f"{expected:,}" in model_summary(model) and name in model_summary(model)
    assert abs(expected / 1e6 - reported) < 0.1, (name, expected)


def test_resnet_64d_residual_against_table6_is_in_the_convolutions():
    """Table 6's 2.7M for ResNet-64d is 0.08M below our count; the 3×3/1×1 convolution weights alone are
    already 2.77M, so no choice of BN, bias or head layout reaches 2.7M: the paper's figure is rounded down."""
    c1, c2, c3 = 64, 128, 256
    convs = (conv(3, 3, c1) + 4 * conv(3, c1, c1) + conv(3, c1, c2) + 3 * conv(3, c2, c2) + conv(1, c1, c2)
             + conv(3, c2, c3) + 3 * conv(3, c3, c3) + conv(1, c2, c3))
    assert convs == 2_770_624
    assert hand_count(4, "none", 32) - convs < 7_000  # BN, shortcut biases and the FC


def test_names_round_trip_and_bad_names_explain():
    model = build_cifar_model("EncNet-16k64d", num_classes=100)
    assert (model.widen, model.attention, model.num_codes, model.num_classes) == (4, "encoding", 16, 100)
    assert model.name == "EncNet-16k64d" and model.block == "preact"
    assert build_cifar_model("SE-ResNet-16d", block="postact").block == "postact"
    for bad in ["EncNet-32k100d", "SE-ResNet", "ResNet-0d", "encnet-32k128d", "EncNetDrop-32k128d"]:
        with pytest.raises(ValueError, match="EncNet-32k128d"):
            build_cifar_model(bad)
    with pytest.raises(ValueError, match="attention must be one of"):
        CifarResNet(attention="encoding_drop")
    with pytest.raises(ValueError, match="model.cifar_block"):
        CifarResNet(block="preactivation")


# --- forward/backward -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("block", ["preact", "postact"])
@pytest.mark.parametrize("attention", ["none", "se", "encoding"])
def test_forward_backward_every_attention_and_block(attention, block):
    model = CifarResNet(widen=1, attention=attention, num_codes=4, num_classes=10, block=block)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 7])  # 16 px: shapes, not accuracy
    logits = model(x)
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, p in model.stage3[1].attention.named_parameters():  # every learnable tensor is used, not just exists
        assert p.grad.abs().sum() > 0, name


def _bn_eval(x, norm):
    shape = (1, -1, 1, 1)
    return ((x - norm.running_mean.view(shape)) / torch.sqrt(norm.running_var.view(shape) + norm.eps)
            * norm.weight.view(shape) + norm.bias.view(shape))


def _random_stats(module):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


def test_preact_block_order_structure_and_hand_forward():
    attention = nn.Sequential(nn.Conv2d(4, 4, 1))  # any map: the test checks where it sits
    block = PreActBlock(2, 4, 2, attention).double().eval()
    # Structure: the first BN normalises the block's input (2 channels), before any convolution.
    assert block.bn1.num_features == 2 and block.conv1.in_channels == 2 and block.bn2.num_features == 4
    assert block.shortcut.bias is not None and not any(isinstance(m, nn.BatchNorm2d) for m in block.shortcut.modules())
    _random_stats(block)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    h = F.conv2d(torch.relu(_bn_eval(x, block.bn1)), block.conv1.weight, stride=2, padding=1)
    h = F.conv2d(torch.relu(_bn_eval(h, block.bn2)), block.conv2.weight, padding=1)
    h = F.conv2d(h, attention[0].weight, attention[0].bias)
    shortcut = F.conv2d(x, block.shortcut.weight, block.shortcut.bias, stride=2)  # the raw input, not BN-ReLU(x)
    torch.testing.assert_close(block(x), h + shortcut)  # no ReLU after the addition


def test_postact_block_order_is_the_releases():
    attention = nn.Sequential(nn.Conv2d(4, 4, 1))
    block = PostActBlock(2, 4, 2, attention).double().eval()
    assert block.bn1.num_features == 4 and block.bn2.num_features == 4
    _random_stats(block)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    h = torch.relu(_bn_eval(F.conv2d(x, block.conv1.weight, stride=2, padding=1), block.bn1))
    h = _bn_eval(F.conv2d(h, block.conv2.weight, padding=1), block.bn2)
    h = F.conv2d(h, attention[0].weight, attention[0].bias)
    torch.testing.assert_close(block(x), torch.relu(h + F.conv2d(x, block.shortcut.weight, block.shortcut.bias,
                                                                  stride=2)))


def test_identity_block_with_a_closed_gate_returns_its_input():
    """The attention multiplies the residual branch only: with the SE gate at 0 a pre-act block is the identity."""
    model = CifarResNet(widen=1, attention="se").double().eval()
    block = model.stage1[1]
    with torch.no_grad():
        block.attention.fc2.weight.zero_()
        block.attention.fc2.bias.fill_(-1e4)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(block(x), x)


def test_se_attention_reduction_16_matches_naive_formula():
    model = CifarResNet(widen=4, attention="se").double()
    se = model.stage1[0].attention
    x = torch.randn(3, 64, 5, 5, dtype=torch.float64)
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    assert w1.shape == (4, 64) and w2.shape == (64, 4)  # 64 / 16 = 4
    assert model.stage3[1].attention.fc1.weight.shape[0] == 256 // 16
    gate = torch.sigmoid(torch.relu(x.mean(dim=(2, 3)) @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_the_demos_se_resnet_16d_blocks_against_a_float64_hand_forward():
    """The demo's SE-ResNet-16d (configs/demo/cifar10_se_resnet_64d.yaml): every unit's bottleneck is C // 16 (1, 1, 2,
    2, 4, 4 at widths 16, 32, 64), and a downsampling block is x's shortcut plus the SE-gated residual branch, gate
    = sigmoid(W2 ReLU(W1 pool(branch))), computed here from the block's own weights (SE-Net; paper §3.5)."""
    model = build_cifar_model("SE-ResNet-16d").double().eval()
    hidden = [b.attention.fc1.out_channels for st in (model.stage1, model.stage2, model.stage3) for b in st]
    assert hidden == [1, 1, 2, 2, 4, 4]
    _random_stats(model)
    block = model.stage2[0]  # 16 → 32 channels, stride 2, hidden 2
    se = block.attention
    with torch.no_grad():  # trained-looking SE weights: the initial ones leave the gate near 0.5
        for p in se.parameters():
            p.uniform_(-1.0, 1.0)
    # images that differ in their channel means, as real feature maps do (i.i.d. noise pools to ≈ the same vector)
    x = torch.randn(3, 16, 8, 8, dtype=torch.float64) + 2 * torch.randn(3, 16, 1, 1, dtype=torch.float64)
    h = F.conv2d(torch.relu(_bn_eval(x, block.bn1)), block.conv1.weight, stride=2, padding=1)
    h = F.conv2d(torch.relu(_bn_eval(h, block.bn2)), block.conv2.weight, padding=1)
    squeeze = h.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(squeeze @ se.fc1.weight.flatten(1).T + se.fc1.bias) @ se.fc2.weight.flatten(1).T
                         + se.fc2.bias)
    assert gate.std(0).max() > 0.01  # the gate depends on the image, so a misplaced pooling would show
    shortcut = F.conv2d(x, block.shortcut.weight, block.shortcut.bias, stride=2)
    torch.testing.assert_close(block(x), h * gate[:, :, None, None] + shortcut)


def naive_encoding(x, codewords, smoothing):
    """e_k = Σ_i a_ik (x_i − c_k), a_ik = softmax_k(−s_k‖x_i − c_k‖²) (§3.1, s_k > 0), naively."""
    x = x.flatten(2).transpose(1, 2)  # B×N×D
    residual = x[:, :, None, :] - codewords[None, None]  # B×N×K×D
    assign = torch.softmax(-smoothing * residual.pow(2).sum(-1), dim=2)  # B×N×K
    return (assign[..., None] * residual).sum(1)  # B×K×D


def test_encoding_attention_in_eval_matches_naive_formula_with_s_one_half_and_l2_norm():
    attention = EncodingAttention(16, num_codes=5).double().eval()
    assert attention.reduce[0].weight.shape == (4, 16, 1, 1)  # 1×1 conv reducing the channels 4×
    _random_stats(attention)
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    reduced = torch.relu(_bn_eval(torch.einsum("bchw,dc->bdhw", x, attention.reduce[0].weight.flatten(1)),
                                  attention.reduce[1]))
    encoded = naive_encoding(reduced, attention.encoding.codewords, 0.5).flatten(1)  # K encoders concatenated
    unit = encoded / encoded.pow(2).sum(1, keepdim=True).sqrt()
    seen = []
    attention.fc.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    gate = torch.sigmoid(unit @ attention.fc.weight.T + attention.fc.bias)
    torch.testing.assert_close(attention(x), x * gate[:, :, None, None])
    torch.testing.assert_close(seen[0].norm(dim=1), torch.ones(2, dtype=torch.float64))  # L2-normalised


# --- EncodingDrop: the smoothing factors of §3.5 ------------------------------------------------------------------
def test_encoding_drop_evaluates_with_exactly_one_half_in_the_papers_sign():
    drop = EncodingDrop(6, num_codes=4).double().eval()
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    out = drop(x)
    assert torch.equal(drop.smoothing, torch.full((4,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(out, naive_encoding(x, drop.codewords, 0.5))
    assert torch.equal(drop(x), out)  # deterministic


def test_encoding_drop_draws_new_factors_every_training_step_from_u01():
    drop = EncodingDrop(6, num_codes=4).double()
    assert "scale" not in dict(drop.named_parameters()) and "scale" in drop.state_dict()
    assert count_parameters(drop) == 4 * 6  # codewords only
    optimizer = torch.optim.SGD(drop.parameters(), lr=0.1)
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    drawn = []
    for _ in range(3):  # training steps
        out = drop(x)
        s = drop.smoothing.clone()
        torch.testing.assert_close(out, naive_encoding(x, drop.codewords.detach(), s))  # the forward used s
        optimizer.zero_grad()
        out.pow(2).sum().backward()
        assert drop.codewords.grad.abs().sum() > 0
        optimizer.step()
        drawn.append(s)
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])
    samples = []
    with torch.no_grad():
        for _ in range(400):
            drop(x[:1, :, :1, :1])
            samples.append(drop.smoothing.clone())
    samples = torch.stack(samples)
    assert samples.min() >= 0 and samples.max() < 1
    assert abs(samples.mean().item() - 0.5) < 0.03 and abs(samples.var().item() - 1 / 12) < 0.01  # U(0, 1)


def test_backward_uses_the_draw_of_its_own_forward():
    """Gradients through a training forward equal those of a plain Encoding with the drawn factors."""
    drop = EncodingDrop(3, num_codes=2).double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    out = drop(x)
    s = drop.smoothing.clone()
    drop(x)  # a later step's draw must not leak into the first backward
    (grad,) = torch.autograd.grad(out.sum(), x)
    y = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(naive_encoding(y, drop.codewords.detach(), s).sum(), y)
    torch.testing.assert_close(grad, expected)


def test_encnet_model_train_is_random_eval_is_deterministic():
    model = CifarResNet(widen=1, attention="encoding", num_codes=4)
    x = torch.randn(2, 3, 16, 16)
    layer = model.stage1[0].attention.encoding
    model(x)
    first_draw = layer.smoothing.clone()
    model(x)
    assert not torch.equal(first_draw, layer.smoothing)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert (layer.smoothing == 0.5).all()


def test_encoding_drop_loads_a_state_dict_with_learnable_scale():
    """A released-style state dict (``scale`` a parameter) loads into the buffer."""
    source = Encoding(16, 4)
    target = EncodingDrop(16, 4)
    missing, unexpected = target.load_state_dict(source.state_dict())
    assert not missing and not unexpected
    torch.testing.assert_close(target.codewords, source.codewords)
