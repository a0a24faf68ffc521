"""Execute the tutorial notebooks.

    python tutorials/run.py [--fast] [NAME ...]

A full run trains each network for the epochs its notebook states, saves the weights to ``data/`` and writes the
outputs into the notebook; ``--fast`` (what CI runs) sets ``GLUONCAM_TUTORIAL_FAST=1``, which shrinks training to a
short check and explains the shipped weights, and leaves the notebook files unchanged.
"""
import argparse
import os
import sys
import time
from typing import Dict, List, Optional

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = ('quickstart', 'mnist_saliency', 'fashion_mnist_gradcam_pp', 'fashion_mnist_layers', 'imagenet_vgg16',
             'which_map_to_trust')


def execute(name: str, fast: bool, env: Optional[Dict[str, str]] = None) -> nbformat.NotebookNode:
    """Run ``tutorials/<name>.ipynb`` top to bottom in a fresh kernel (working folder ``tutorials/``) and return
    it with its outputs; raises ``nbclient.exceptions.CellExecutionError`` naming the failing cell."""
    notebook = nbformat.read(os.path.join(HERE, name + '.ipynb'), as_version=4)
    kernel_env = dict(os.environ if env is None else env)
    kernel_env['GLUONCAM_TUTORIAL_FAST'] = '1' if fast else '0'
    client = NotebookClient(notebook, timeout=900 if fast else None, kernel_name='python3',
                            resources={'metadata': {'path': HERE}})
    client.execute(env=kernel_env)
    return notebook


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help='notebooks to run (default: all): ' + ', '.join(NOTEBOOKS))
    parser.add_argument('--fast', action='store_true', help='CI mode: short training, notebooks left unchanged')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"unknown notebook(s) {', '.join(unknown)}; valid: {', '.join(NOTEBOOKS)}")
    for name in args.names or NOTEBOOKS:
        start = time.time()
        notebook = execute(name, args.fast)
        if not args.fast:
            nbformat.write(notebook, os.path.join(HERE, name + '.ipynb'))
        print(f'{name}: ran in {time.time() - start:.0f} s', flush=True)


if __name__ == '__main__':
    sys.exit(main())
