"""The CIFAR ResNet and its attention layers, against hand-written formulas and naive float64 oracles."""

import pytest
import torch
from torch import nn

from encnet.models.cifar import (
    CifarResNet,
    EncodingAttention,
    EncodingDrop,
    build_cifar_model,
    count_parameters,
    model_summary,
)
from encnet.nn.encoding import Encoding


@pytest.fixture(autouse=True)
def _small_cpu():
    torch.set_num_threads(2)
    torch.manual_seed(0)


# --- hand count of the layers (PAPER.md §7), independent of the model's code ---------------------------------
def conv(k, cin, cout):  # no bias: every conv feeds a BN
    return k * k * cin * cout


def bn(c):
    return 2 * c


def fc(cin, cout):
    return cin * cout + cout


def attention_count(kind, c, k):
    if kind == "none":
        return 0
    if kind == "se":  # pool → FC C→C/4 → ReLU → FC C/4→C
        return fc(c, c // 4) + fc(c // 4, c)
    d = c // 4  # conv1×1 C→D, BN, Encoding codewords K·D (+ K smoothing factors if learnable), FC K·D → C
    smoothing = k if kind == "encoding" else 0
    return conv(1, c, d) + bn(d) + k * d + smoothing + fc(k * d, c)


def block_count(cin, cout, stride, kind, k):
    count = conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout) + attention_count(kind, cout, k)
    if stride != 1 or cin != cout:
        count += conv(1, cin, cout) + bn(cout)
    return count


def hand_count(widen, kind, k, classes=10):
    c1, c2, c3 = 16 * widen, 32 * widen, 64 * widen
    total = conv(3, 3, c1) + bn(c1)
    total += block_count(c1, c1, 1, kind, k) + block_count(c1, c1, 1, kind, k)
    total += block_count(c1, c2, 2, kind, k) + block_count(c2, c2, 1, kind, k)
    total += block_count(c2, c3, 2, kind, k) + block_count(c3, c3, 1, kind, k)
    return total + bn(c3) + fc(c3, classes)


@pytest.mark.parametrize(
    "name, widen, kind, k",
    [
        ("EncNet-32k128d", 8, "encoding", 32),
        ("SE-ResNet-64d", 4, "se", 32),
        ("EncNetDrop-32k128d", 8, "encoding_drop", 32),
        ("ResNet-64d", 4, "none", 32),
        ("EncNet-16k64d", 4, "encoding", 16),
    ],
)
def test_parameter_count_matches_hand_count(name, widen, kind, k):
    with torch.device("meta"):  # shapes only: the 128d model is not allocated
        model = build_cifar_model(name)
    expected = hand_count(widen, kind, k)
    assert count_parameters(model) == expected
    assert f"{expected:,}" in model_summary(model) and name in model_summary(model)


def test_names_round_trip_and_bad_names_explain():
    model = build_cifar_model("EncNet-16k64d", num_classes=100)
    assert (model.widen, model.attention, model.num_codes, model.num_classes) == (4, "encoding", 16, 100)
    assert model.name == "EncNet-16k64d"
    assert CifarResNet(widen=8, attention="encoding_drop", num_codes=32).name == "EncNetDrop-32k128d"
    for bad in ["EncNet-32k100d", "SE-ResNet", "ResNet-0d", "encnet-32k128d"]:
        with pytest.raises(ValueError, match="EncNet-32k128d"):
            build_cifar_model(bad)
    with pytest.raises(ValueError, match="attention must be one of"):
        CifarResNet(attention="cbam")


# --- forward/backward -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["none", "se", "encoding", "encoding_drop"])
def test_forward_backward_every_attention(attention):
    model = CifarResNet(widen=1, attention=attention, num_codes=4, num_classes=10)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 7, 9])
    logits = model(x)
    assert logits.shape == (4, 10)
    nn.functional.cross_entropy(logits, y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every learnable tensor of the attention receives gradient, not just exists
    for name, p in model.stage3[1].bn2.attention.named_parameters():
        assert p.grad.abs().sum() > 0, name


def test_attention_sits_after_second_bn_before_shortcut_addition():
    model = CifarResNet(widen=1, attention="se").double().eval()
    block = model.stage1[1]  # identity shortcut
    se = block.bn2.attention
    with torch.no_grad():  # gate ≈ 0: the residual branch is switched off, the block must return ReLU(x)
        se.fc2.weight.zero_()
        se.fc2.bias.fill_(-1e4)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(block(x.clone()), x.clamp(min=0))


def test_se_attention_matches_naive_formula():
    model = CifarResNet(widen=1, attention="se").double()
    se = model.stage2[0].bn2.attention
    x = torch.randn(3, 32, 5, 5, dtype=torch.float64)
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    pooled = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(pooled @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])
    assert w1.shape == (8, 32)  # reduction 4


def naive_encoding(x, codewords, scale):
    """e_k = Σ_i softmax_k(s_k‖x_i − c_k‖²)(x_i − c_k) with the full B×N×K×D residual tensor."""
    x = x.flatten(2).transpose(1, 2)  # B×N×D
    residual = x[:, :, None, :] - codewords[None, None]  # B×N×K×D
    assign = torch.softmax(scale * residual.pow(2).sum(-1), dim=2)  # B×N×K
    return (assign[..., None] * residual).sum(1)  # B×K×D


def test_encoding_attention_matches_naive_formula():
    attention = EncodingAttention(16, num_codes=5).double().eval()
    with torch.no_grad():  # non-trivial BN statistics so the eval path is exercised
        attention.reduce[1].running_mean.uniform_(-0.5, 0.5)
        attention.reduce[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 16, 6, 6, dtype=torch.float64)
    conv, norm = attention.reduce[0], attention.reduce[1]
    reduced = torch.relu(
        (torch.einsum("bchw,dc->bdhw", x, conv.weight.flatten(1)) - norm.running_mean[:, None, None])
        / torch.sqrt(norm.running_var[:, None, None] + norm.eps)
        * norm.weight[:, None, None]
        + norm.bias[:, None, None]
    )
    encoded = naive_encoding(reduced, attention.encoding.codewords, attention.encoding.scale).flatten(1)
    encoded = encoded / encoded.pow(2).sum(1, keepdim=True).sqrt()
    gate = torch.sigmoid(encoded @ attention.fc.weight.T + attention.fc.bias)
    torch.testing.assert_close(attention(x), x * gate[:, :, None, None])


# --- EncodingDrop ---------------------------------------------------------------------------------------------
def test_encoding_drop_redraws_in_training_and_is_fixed_in_eval():
    drop = EncodingDrop(6, num_codes=4).double()
    reference = Encoding(6, num_codes=4).double()
    reference.codewords.data.copy_(drop.codewords.data)
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)

    assert "scale" not in dict(drop.named_parameters()) and "scale" in drop.state_dict()
    assert count_parameters(drop) == 4 * 6

    drawn = []
    for _ in range(3):
        out = drop(x)
        scale = drop.scale.clone()
        assert ((scale >= -1) & (scale < 0)).all()
        reference.scale.data.copy_(scale)  # the training forward used exactly the drawn factors
        torch.testing.assert_close(out, reference(x))
        out.sum().backward()
        drawn.append(scale)
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])
    assert drop.codewords.grad is not None

    drop.eval()
    first = drop(x)
    assert torch.equal(drop.scale, torch.full((4,), -0.5, dtype=torch.float64))
    reference.scale.data.fill_(-0.5)
    torch.testing.assert_close(first, reference(x))
    assert torch.equal(drop(x), first)


def test_encnet_drop_model_train_is_random_eval_is_deterministic():
    model = CifarResNet(widen=1, attention="encoding_drop", num_codes=4)
    x = torch.randn(4, 3, 32, 32)
    scales = model.stage1[0].bn2.attention.encoding
    model(x)
    first_draw = scales.scale.clone()
    model(x)
    assert not torch.equal(first_draw, scales.scale)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    assert (scales.scale == -0.5).all()


def test_encoding_drop_loads_checkpoint_with_learnable_scale():
    """A released-style state dict (``scale`` a parameter) loads into the buffer."""
    source = EncodingAttention(16, num_codes=4)
    target = EncodingAttention(16, num_codes=4, drop=True)
    missing, unexpected = target.load_state_dict(source.state_dict())
    assert not missing and not unexpected
    torch.testing.assert_close(target.encoding.codewords, source.encoding.codewords)
