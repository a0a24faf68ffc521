"""The tutorial notebooks: each runs top to bottom in fast mode (what a broken notebook fails), and each committed
notebook carries the outputs of a full run whose numbers its text and the README quote."""
import importlib.util
import os
import re

import nbformat
import pytest
from mxnet import nd
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import vision

from conftest import REPO

_spec = importlib.util.spec_from_file_location('tutorials_run', os.path.join(REPO, 'tutorials', 'run.py'))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def _read(name):
    return nbformat.read(os.path.join(REPO, 'tutorials', name + '.ipynb'), as_version=4)


def _output_text(notebook):
    return '\n'.join(output.get('text', '') for cell in notebook.cells if cell.cell_type == 'code'
                     for output in cell.outputs)


def _figures(notebook):
    return sum(any(kind.startswith('image/') for kind in output.get('data', {}))
               for cell in notebook.cells if cell.cell_type == 'code' for output in cell.outputs)


@pytest.mark.parametrize('name', run.NOTEBOOKS)
def test_notebook_runs_in_fast_mode(name, data_root):
    env = dict(os.environ, GLUONCAM_DATA=data_root)
    notebook = run.execute(name, fast=True, env=env)  # raises CellExecutionError naming the cell
    assert _figures(notebook) >= 1


@pytest.mark.parametrize('name', run.NOTEBOOKS)
def test_committed_notebook_holds_a_clean_full_run(name):
    notebook = _read(name)
    code = [cell for cell in notebook.cells if cell.cell_type == 'code']
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), 'not run top to bottom'
    assert not [output for cell in code for output in cell.outputs if output.output_type == 'error']
    assert _figures(notebook) >= 1
    assert not re.search(r'TBD|RESULTS_[A-Z]', ''.join(cell.source for cell in notebook.cells)), 'a placeholder left'


TRAINED = {'mnist_saliency': 5, 'fashion_mnist_gradcam_pp': 25, 'fashion_mnist_layers': 8}


@pytest.mark.parametrize('name, epochs', TRAINED.items())
def test_quoted_accuracy_is_the_one_the_full_run_printed(name, epochs):
    notebook = _read(name)
    outputs = _output_text(notebook)
    printed = re.findall(r'^test accuracy: ([0-9.]+)$', outputs, re.M)
    assert len(printed) == 1
    assert f'epoch {epochs}:' in outputs.replace(f'epoch {epochs:2d}:', f'epoch {epochs}:'), 'not a full run'
    markdown = ''.join(cell.source for cell in notebook.cells if cell.cell_type == 'markdown')
    assert f'test accuracy of **{printed[0]}** after {epochs} epochs' in markdown
    readme = open(os.path.join(REPO, 'README.md')).read()
    item = next(item for item in readme.split('\n- ') if f'(tutorials/{name}.ipynb)' in item)
    assert f'test accuracy {printed[0]}' in ' '.join(item.split())


def test_which_map_to_trust_quotes_only_numbers_its_run_printed():
    """Every number of the conclusions (a decimal with at least two digits after the point) is in the outputs."""
    notebook = _read('which_map_to_trust')
    printed = _output_text(notebook) + '\n'.join(
        output.get('data', {}).get('text/markdown', '') for cell in notebook.cells if cell.cell_type == 'code'
        for output in cell.outputs)
    first_result = next(k for k, cell in enumerate(notebook.cells) if cell.cell_type == 'code' and cell.outputs)
    quoted = [number for cell in notebook.cells[first_result:] if cell.cell_type == 'markdown'
              for number in re.findall(r'-?\d+\.\d{2,}', cell.source)]
    assert len(quoted) >= 10
    assert [number for number in quoted if number not in printed] == []


@pytest.mark.parametrize('name', run.NOTEBOOKS)
def test_readme_links_every_notebook(name):
    assert f'(tutorials/{name}.ipynb)' in open(os.path.join(REPO, 'README.md')).read()


def test_imagenet_notebook_vgg16_has_the_model_zoo_parameters():
    """The notebook's VGG-16 (two imports swapped) takes the model-zoo file: the same parameter names and shapes
    as ``mxnet.gluon.model_zoo.vision.vgg16``, which is what ``load_parameters`` checks."""
    source = next(cell.source for cell in _read('imagenet_vgg16').cells if 'class VGG16' in cell.source)
    namespace = {'nn': nn}
    exec(source.split('\ntry:')[0], namespace)
    shapes = {}
    for key, net in (('notebook', namespace['VGG16']()), ('model zoo', vision.vgg16())):
        net.initialize()
        net(nd.zeros((1, 3, 224, 224)))
        shapes[key] = {name: p.shape for name, p in net._collect_params_with_prefix().items()}
    assert shapes['notebook'] == shapes['model zoo'] and len(shapes['notebook']) == 32


def test_runner_refuses_unknown_names(capsys):
    with pytest.raises(SystemExit):
        run.main(['no_such_notebook'])
    assert 'valid: quickstart' in capsys.readouterr().err
