"""saln inside your own training loop: no engine, no monkey-patching.

    python examples/custom_loop.py

Model-free selection (SALN) runs as a ``batch_sampler``, so the DataLoader only ever loads the
kept samples; model-aware selection (here ``loss``, which needs no reference model) is one call
in the step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import saln

torch.manual_seed(0)
# A toy classification problem: 512 points, 16 features, 4 classes.
x = torch.randn(512, 16)
y = (x[:, :4].argmax(1)).long()
dataset = TensorDataset(x, y)
features = np.abs(x.numpy())  # fixed reference features, one row per sample (global index)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

# 1. Model-free: SALN picks 20% of every super-batch of 64 before anything is loaded.
sampler = saln.SelectiveBatchSampler(
    len(dataset), batch_size=64, selector="saln", features=features, filter_ratio=0.8, seed=0
)
loader = DataLoader(dataset, batch_sampler=sampler)
for epoch in range(3):
    sampler.set_epoch(epoch)
    for inputs, targets in loader:  # 12 rows per step
        loss = F.cross_entropy(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

# 2. Model-aware: score the loaded batch without grad, keep the top-loss rows, train on those.
selector = saln.SELECTORS.build("loss")
keep = saln.keep_count(64, 0.8)
for inputs, targets in DataLoader(dataset, batch_size=64, shuffle=True):
    with torch.no_grad():
        losses = F.cross_entropy(model(inputs), targets, reduction="none")
    view = saln.BatchView(indices=torch.arange(len(targets)), labels=targets, losses=losses)
    rows = selector.select(view, keep).positions
    loss = F.cross_entropy(model(inputs[rows]), targets[rows])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

accuracy = (model(x).argmax(1) == y).float().mean().item()
print(f"accuracy after selective training: {accuracy:.3f}")
