"""What every lab figure shares: a backend that needs no screen, and one way to finish and save."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are written on servers and in CI: no display
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def subplots(*args, **kwargs):
    """`plt.subplots` on the headless backend."""
    return plt.subplots(*args, **kwargs)


def save(fig, path: Path, axes, legend_ax=None) -> Path:
    """Grid on every axis, a small legend on `legend_ax` (default: the first), tight layout, PNG at
    120 dpi; the figure is closed."""
    for ax in axes:
        ax.grid(alpha=0.3)
    (legend_ax if legend_ax is not None else axes[0]).legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
