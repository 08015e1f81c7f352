"""Reference networks: shapes, gradients reach every parameter, the null label, input scaling, validation."""

import pytest
import torch

from scoresde import VESDE, VPSDE, ScoreModel, nets


def _randomise_outputs(net):
    """Output layers start at zero; give them weights so the output depends on the inputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


@pytest.mark.parametrize(
    "net, shape",
    [
        (lambda: nets.MLP(2, hidden=32, depth=2), (5, 2)),
        (lambda: nets.MLP(12, hidden=32, time_embedding="fourier"), (5, 3, 4)),
        (lambda: nets.UNet(1, 8, channels=16), (3, 1, 8, 8)),
        (lambda: nets.UNet(3, 16, channels=16, channel_mults=(1, 2, 2), attention_resolutions=(8, 4), heads=2), (2, 3, 16, 16)),
        (lambda: nets.UNet(3, 32, channels=16, channel_mults=(1, 2, 2, 2), num_res_blocks=1), (2, 3, 32, 32)),
    ],
)
def test_shapes_zero_init_and_gradients_reach_every_parameter(net, shape):
    net = net()
    x, t = torch.randn(shape), torch.rand(shape[0])
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer
    _randomise_outputs(net)
    net(x, t).square().sum().backward()
    unused = [n for n, p in net.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert not unused  # DistributedDataParallel needs every parameter in the graph
    net = net.to(torch.float64)  # nn.Module machinery (.to, .apply) is intact
    assert net(x.double(), t.double()).dtype == torch.float64


@pytest.mark.parametrize("make", [lambda: nets.MLP(4, hidden=32, num_classes=3), lambda: nets.UNet(1, 8, channels=16, num_classes=3)])
def test_null_label_is_the_unconditional_input(make):
    net = _randomise_outputs(make())
    assert net.null_label == 3 and net.num_classes == 3
    x = torch.randn(4, 4) if isinstance(net, nets.MLP) else torch.randn(4, 1, 8, 8)
    t = torch.rand(4)
    uncond = net(x, t)
    torch.testing.assert_close(net(x, t, y=torch.full((4,), 3)), uncond)
    torch.testing.assert_close(net(x, t, y=3), uncond)
    assert not torch.allclose(net(x, t, y=torch.zeros(4, dtype=torch.long)), uncond)
    # labels change the output of each sample independently
    y = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(net(x, t, y=y)[3], uncond[3])
    # gradients reach the label embedding (the whole table is one parameter)
    net(x, t, y=y).sum().backward()
    assert net.embed.label.weight.grad is not None


def test_time_embeddings():
    emb = nets.SinusoidalEmbedding(8, scale=1.0, max_period=100.0)
    t = torch.tensor([0.0, 2.0])
    out = emb(t)
    freqs = 100.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(out[1], torch.cat([torch.cos(2 * freqs), torch.sin(2 * freqs)]))
    four = nets.FourierEmbedding(6, scale=3.0)
    assert "W" in four.state_dict()  # the random frequencies are saved with the network
    torch.testing.assert_close(four(torch.zeros(1)), torch.tensor([[0.0, 0, 0, 1, 1, 1]]))


def test_input_scaling_normalises_by_the_marginal_std():
    sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    seen = {}

    def inner(x, t):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    wrapped = nets.InputScaling(inner, sde, data_std=0.5, time_input=lambda t: 2 * t)
    x, t = torch.randn(3, 2), torch.tensor([0.1, 0.5, 1.0])
    wrapped(x, t)
    alpha, sigma = sde.marginal(t)
    c_in = 1.0 / torch.sqrt(alpha**2 * 0.25 + sigma**2)
    torch.testing.assert_close(seen["x"], c_in[:, None] * x)
    torch.testing.assert_close(seen["t"], 2 * t)
    model = ScoreModel(nets.InputScaling(nets.MLP(2, hidden=16), VPSDE()), VPSDE())
    assert model.score(x, t).shape == x.shape


def test_invalid_arguments_name_themselves():
    mlp = nets.MLP(2, hidden=16)
    unet = nets.UNet(1, 8, channels=16, num_classes=10)
    with pytest.raises(ValueError, match="x"):
        mlp(torch.randn(3, 3), torch.rand(3))
    with pytest.raises(ValueError, match="t"):
        mlp(torch.randn(3, 2), torch.rand(2))
    with pytest.raises(ValueError, match="y"):
        mlp(torch.randn(3, 2), torch.rand(3), y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="x"):
        unet(torch.randn(2, 1, 16, 16), torch.rand(2))
    with pytest.raises(ValueError, match="y"):
        unet(torch.randn(2, 1, 8, 8), torch.rand(2), y=torch.tensor([0, 11]))
    with pytest.raises(TypeError, match="y"):
        unet(torch.randn(2, 1, 8, 8), torch.rand(2), y=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="y"):
        unet(torch.randn(2, 1, 8, 8), torch.rand(2), y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="image_size"):
        nets.UNet(1, 10, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="channel_mults"):
        nets.UNet(1, 8, channel_mults=())
    with pytest.raises(ValueError, match="dim"):
        nets.SinusoidalEmbedding(7)
    with pytest.raises(ValueError, match="time_embedding"):
        nets.MLP(2, time_embedding="learned")
    with pytest.raises(ValueError, match="heads"):
        nets.AttentionBlock(6, heads=4)
    with pytest.raises(TypeError, match="sde"):
        nets.InputScaling(mlp, "vp")
