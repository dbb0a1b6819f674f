"""`dal-dist model init` with torchvision names, `--weights` and plug-ins (Typer in process)."""

import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from dal_dist.cli.main import app
from dal_dist.errors import DalDistError
from dal_dist.models import load_checkpoint

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_init_with_local_torchvision_weights(tmp_path):
    torch.manual_seed(7)
    tv = torchvision.models.resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "r18.pt")
    r = _invoke("model", "init", "--model", "resnet18", "--classes", "3", "--image-size", "32",
                "--weights", tmp_path / "r18.pt", "--out", tmp_path / "m.pt")
    assert r.exit_code == 0, r.output
    assert "resnet18, 3 classes, 3x32x32, backbone from" in r.output
    model = load_checkpoint(tmp_path / "m.pt")
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), tv(x), rtol=1e-4, atol=1e-5)


def test_init_with_weights_of_another_architecture_writes_nothing(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    r = _invoke("model", "init", "--model", "resnet34", "--classes", "3", "--image-size", "32",
                "--weights", tmp_path / "r18.pt", "--out", tmp_path / "m.pt")
    assert isinstance(r.exception, DalDistError)
    assert "do not fit model 'resnet34' (missing keys ['layer1.2.bn1.bias'" in str(r.exception)
    assert not (tmp_path / "m.pt").exists()


def test_init_a_plug_in_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "cli_init_plugin.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes):\n"
        "        super().__init__(); self.body = nn.Linear(12, 6); self.drop = nn.Dropout(0.2)\n"
        "        self.out = nn.Linear(6, num_classes)\n"
        "    def features(self, x): return self.body(x.flatten(1)[:, :12])\n"
        "    def head(self, f): return self.out(self.drop(f))\n")
    monkeypatch.chdir(tmp_path)
    r = _invoke("model", "init", "--model", "cli_init_plugin:Net", "--classes", "4", "--image-size", "8",
                "--out", "m.pt")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "m.pt").config.factory_path == "cli_init_plugin:Net"
