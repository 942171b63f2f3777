"""A small PyTorch MLP with the scikit-learn estimator interface, for the train template.

It lives in the package (not in a notebook) so that a pickled model can be loaded by any
process with nbops installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Multi-layer perceptron classifier trained with Adam; ``fit``/``predict_proba``."""

    def __init__(self, hidden: int = 32, epochs: int = 30, lr: float = 0.01,
                 batch_size: int = 64, seed: int = 0) -> None:
        self.hidden, self.epochs, self.lr = hidden, epochs, lr
        self.batch_size, self.seed = batch_size, seed

    def fit(self, X: Any, y: Any, on_epoch: Callable[[int, float], None] | None = None
            ) -> TorchMLPClassifier:
        import torch

        torch.manual_seed(self.seed)
        features = np.asarray(X, dtype=np.float32)
        self.mean_ = features.mean(axis=0)
        self.scale_ = features.std(axis=0) + 1e-8
        self.classes_, labels = np.unique(np.asarray(y), return_inverse=True)
        inputs = torch.from_numpy((features - self.mean_) / self.scale_)
        targets = torch.from_numpy(labels.astype(np.int64))
        self.net_ = torch.nn.Sequential(
            torch.nn.Linear(features.shape[1], self.hidden), torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, len(self.classes_)))
        optimiser = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(self.seed)
        for epoch in range(self.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for start in range(0, len(inputs), self.batch_size):
                batch = order[start:start + self.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(self.net_(inputs[batch]), targets[batch])
                loss.backward()
                optimiser.step()
                total += float(loss) * len(batch)
            if on_epoch is not None:
                on_epoch(epoch, total / len(inputs))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        import torch

        features = (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_
        with torch.no_grad():
            logits = self.net_(torch.from_numpy(features.astype(np.float32)))
        return np.asarray(torch.softmax(logits, dim=1).numpy(), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])
