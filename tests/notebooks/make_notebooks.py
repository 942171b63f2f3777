"""Regenerate the tiny test notebooks, one per behaviour.

    python tests/notebooks/make_notebooks.py
"""
from pathlib import Path

import nbformat

HERE = Path(__file__).parent


def notebook(name: str, params: str | None, *cells: str, outputs: tuple[str, ...] = ()) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    stage = {"fake_train": "train", "fake_monitor": "monitor"}.get(name, name.replace("_", "-"))
    nb.metadata["nbops"] = {"stage": stage, "outputs": list(outputs)}
    if params is not None:
        nb.cells.append(nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}))
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index}"  # stable ids: regenerating changes nothing
    nbformat.write(nb, HERE / f"{name}.ipynb")


notebook("ok", "x: int = 1  # a number\n",
         "import nbops\ny = x * 2",
         "nbops.log_metric('y', y)\nnbops.output('y', y)\nprint('done', y)",
         outputs=("y",))
notebook("raises", "x: int = 1  # a number\n",
         "a = 1",
         "raise ValueError(f'bad value {x}')",
         "print('never')")
notebook("sys_exit", "x: int = 1  # a number\n",
         "a = 1",
         "import sys\nsys.exit(0)",
         "print('never')")
notebook("os_exit", "x: int = 1  # a number\n",
         "a = 1",
         "import os\nos._exit(3)",
         "print('never')")
notebook("sleeps", "seconds: float = 1e9  # how long to sleep\n",
         "import time, nbops\nnbops.log_metric('before_sleep', 1)\nprint('sleeping', flush=True)",
         "time.sleep(seconds)",
         "print('woke up')")
notebook("huge_output", "lines: int = 200000  # lines to print\n",
         "for i in range(lines):\n    print('line', i, 'x' * 40)",
         "import nbops\nnbops.output('printed', lines)")
notebook("no_parameters", None,
         "import nbops\nnbops.output('answer', 42)")
notebook("echo",
         "i: int = 0  # an int\n"
         "f: float = 0.0  # a float\n"
         "b: bool = False  # a bool\n"
         "s: str = ''  # a string\n"
         "n: int | None = None  # an optional int\n"
         "l: list = []  # a list\n"
         "d: dict = {}  # a dict\n"
         "a = None  # anything JSON-like\n",
         "import math, nbops\n"
         "values = {'i': i, 'f': f, 'b': b, 's': s, 'n': n, 'l': l, 'd': d, 'a': a}\n"
         "nbops.output('echo', values)\n"
         "nbops.output('types', {k: type(v).__name__ for k, v in values.items()})",
         outputs=("echo", "types"))
notebook("record", "n_epochs: int = 3  # epochs\n",
         "import matplotlib\nmatplotlib.use('Agg')\n"
         "import matplotlib.pyplot as plt\n"
         "from pathlib import Path\nimport nbops",
         "for epoch in range(n_epochs):\n"
         "    nbops.log_metric('loss', 1.0 / (epoch + 1), step=epoch)\n"
         "nbops.log_metric('score', 0.5)\nnbops.log_params(lr=0.1, layers=[3, 2])",
         "Path('table.csv').write_text('a,b\\n1,2\\n')\nnbops.log_artifact('table.csv')\n"
         "fig, ax = plt.subplots()\nax.plot([1, 2, 3])\nnbops.log_figure(fig, 'curve')",
         "from sklearn.linear_model import LogisticRegression\n"
         "model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])\n"
         "nbops.log_model(model, 'clf')\nnbops.output('n_epochs', n_epochs)",
         outputs=("n_epochs",))
notebook("produce", "n: int = 3  # lines to write\nseed: int = 0  # varies the content\n",
         "import nbops\nfrom pathlib import Path\n"
         "Path('data.txt').write_text('\\n'.join(str(i + seed) for i in range(n)))\n"
         "stored = nbops.log_artifact('data.txt')\n"
         "nbops.output('path', str(stored))\nnbops.output('total', sum(range(n)) + n * seed)",
         outputs=("path", "total"))
notebook("consume",
         "path: str = ''  # file from the producer\ntotal: int = 0  # expected sum\n"
         "fail: bool = False  # fail on purpose\nfactor: int = 1  # multiplier\n",
         "import nbops\nfrom pathlib import Path\n"
         "values = [int(v) for v in Path(path).read_text().split()]\n"
         "assert sum(values) == total\n"
         "if fail:\n    raise RuntimeError('asked to fail')\n"
         "nbops.output('scaled', total * factor)",
         outputs=("scaled",))
notebook("fake_train", "seed: int = 0  # seed\n",
         "import nbops, secrets\nnbops.output('model_id', secrets.token_hex(4))",
         outputs=("model_id",))
notebook("fake_monitor", "model_id: str = ''  # model\naction: str = 'none'  # what to say\n",
         "import nbops\nnbops.output('action', action)", outputs=("action",))
notebook("torch_model", "hidden: int = 4  # hidden units\n",
         "import torch, nbops\ntorch.manual_seed(0)\n"
         "net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.ReLU(), "
         "torch.nn.Linear(hidden, 1))\n"
         "nbops.log_model(net, 'mlp')\nnbops.output('hidden', hidden)")
