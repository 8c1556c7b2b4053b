"""The Flax FID Inception against a PyTorch reference with pytorch-fid's architecture and
state-dict names (written here with torch.nn: no torchvision), random weights and random
BatchNorm statistics, converted through our torch-free reader."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

from styleavatar_jax import sampling  # noqa: E402
from styleavatar_jax.convert import inception as conv  # noqa: E402
from styleavatar_jax.eval import fid  # noqa: E402
from styleavatar_jax.models import inception as inc  # noqa: E402


# ------------------------------------------------------------ the reference, in torch.nn
class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):  # pytorch-fid's patch: TensorFlow's average pool ignores the padding
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):  # fmt: skip
            bd = layer(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pool)], 1)


class FIDInception(nn.Module):
    """pytorch-fid fid_inception_v3() + InceptionV3(output_blocks=[3]).forward."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, 32)
        self.Mixed_5c = FIDInceptionA(256, 64)
        self.Mixed_5d = FIDInceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, 128)
        self.Mixed_6c = FIDInceptionC(768, 160)
        self.Mixed_6d = FIDInceptionC(768, 160)
        self.Mixed_6e = FIDInceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
        self.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x):  # x [B, 3, H, W] in [0, 1]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def random_reference(seed: int) -> FIDInception:
    """He-scaled random convs and random BatchNorm affine + running statistics, so the
    activations stay O(1) through the 94 layers (features are then a sharp test)."""
    torch.manual_seed(seed)
    net = FIDInception().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.6, 1.4)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net


# ------------------------------------------------------------ tests
def test_resize_matches_torch_up_and_down():
    x = np.random.default_rng(0).random((2, 3, 37, 53), np.float32)
    for size in (299, 16):
        ref = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear",
                            align_corners=False).numpy()  # fmt: skip
        ours = np.asarray(inc.resize_bilinear(x.transpose(0, 2, 3, 1), size)).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(ours, ref, atol=3e-6)  # float32 sums


def test_converted_random_inception_matches_pytorch_fid_architecture(tmp_path):
    """Max abs error ≤ 1e-4 of the 2048-d pool features, float32, at 299². Sharded over 2
    devices, 3 images in batches of 2 (the last padded). uint8 64² images, batch 2 on 2
    devices: test_eval_cli's setting, so one compilation serves both."""
    net = random_reference(0)
    pth = tmp_path / "pt.pth"
    torch.save(net.state_dict(), pth)
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), np.uint8)
    with torch.no_grad():
        ref = net(torch.from_numpy(images.transpose(0, 3, 1, 2) / np.float32(255))).numpy()
    assert 0.5 < np.abs(ref).mean() < 20 and ref.std() > 0.5  # not a dead network

    variables = conv.load_inception(pth)
    mesh = sampling.make_mesh(2)
    ours = fid.FeatureExtractor(variables, batch=2, mesh=mesh)(images)
    assert ours.shape == (3, 2048) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)

    # Round trip through our .npz, and what a different net gives (the test can fail).
    npz = conv.save_npz(variables, tmp_path / "inception.npz")
    again = conv.load_inception(npz)
    jax.tree.map(np.testing.assert_array_equal, again, jax.device_get(variables))
    other = conv.from_state_dict(
        {k: v.numpy() for k, v in random_reference(1).state_dict().items()}, "other"
    )
    assert (
        np.abs(fid.FeatureExtractor(other, batch=2, mesh=mesh)(images[:2]) - ref[:2]).max() > 1e-2
    )


def test_state_dict_errors(tmp_path):
    sd = {k: v.numpy() for k, v in FIDInception().state_dict().items()}
    assert "Mixed_7c.branch_pool.bn.num_batches_tracked" in sd and "fc.weight" in sd
    bad = dict(sd)
    del bad["Mixed_6e.branch7x7dbl_5.bn.running_var"]
    bad["Mixed_8a.conv.weight"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys \['Mixed_8a.conv.weight'\].*"
                       r"missing \['Mixed_6e.branch7x7dbl_5.bn.var'\]"):  # fmt: skip
        conv.from_state_dict(bad, "x.pth")
    bad = dict(sd, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=r"Conv2d_1a_3x3.conv.weight has shape \(5, 5, 3, 32\)"):
        conv.from_state_dict(bad, "x.pth")
    np.savez(tmp_path / "wrong.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a converted FID Inception .npz"):
        conv.load_inception(tmp_path / "wrong.npz")


def test_missing_weights_message_names_file_url_and_other_metrics(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        conv.load_inception(tmp_path / "nope.pth")
    msg = str(e.value)
    assert str(tmp_path / "nope.pth") in msg and conv.WEIGHTS_URL in msg
    assert "swd, consistency" in msg and "convert-inception" in msg
