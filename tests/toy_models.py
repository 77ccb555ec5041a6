"""Shared scaffolding for the tiny test models: the TrigFlow maps built on a subclass's raw network `F`."""
import torch
import torch.nn as nn

SD = 0.5


class TrigFlowToy(nn.Module):
    "Subclasses define `F(x_scaled, t, s=None)`; this adds velocity, the CTM jump G and the consistency map f."
    sigma_d = SD

    def velocity(self, x_t, t):
        return SD * self.F(x_t / SD, t)

    def jump(self, x_t, t, s):
        return torch.cos(t - s)[:, None] * x_t - torch.sin(t - s)[:, None] * SD * self.F(x_t / SD, t)

    def forward(self, x_t, t):
        return torch.cos(t)[:, None] * x_t - torch.sin(t)[:, None] * SD * self.F(x_t / SD, t)
