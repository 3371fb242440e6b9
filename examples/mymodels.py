"""A user's residual CNN, served with ``qpart serve --model mynet=mymodels:make`` (run from
this folder). Replace the random weights and inputs with your trained model and real data."""

import torch
from torch import nn

import qpart


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))  # residual add
        return self.fc(x.mean((2, 3)))


def make() -> qpart.ModelSpec:
    torch.manual_seed(0)
    model = Net().eval()  # model.load_state_dict(torch.load("weights.pt")) for a trained one
    x = torch.randn(512, 3, 32, 32)  # samples of what the model will see: use real data
    return qpart.ModelSpec(
        model, example=x[:2], calibration=x[:256], acceptance=x[256:], description="my residual CNN"
    )
