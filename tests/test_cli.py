"""The command line: predictions, panels and raw maps written, bad files reported, clear errors."""
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

from gluoncam.cli import main

PHOTOS = os.path.join(os.path.dirname(__file__), '..', 'data', 'images')
PHOTO = os.path.join(PHOTOS, 'jellyfish.jpg')


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """One weights folder for the module: EfficientNet-Lite0 is converted once."""
    return str(tmp_path_factory.mktemp('models'))


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('jellyfish.jpg', 'snow_leopard.jpg', 'hummingbird.jpg'):
        shutil.copy(os.path.join(PHOTOS, name), images / name)
    (images / 'broken.jpg').write_bytes(b'not a jpeg')
    return images


def test_explain_writes_panels_and_maps_and_reports_unreadable_files(folder, tmp_path, root, capsys):
    out = tmp_path / 'out'
    code = main(['explain', str(folder), '--root', root, '--out', str(out), '--top-k', '2', '--batch-size', '2'])
    captured = capsys.readouterr()
    assert code == 1
    assert "cannot read" in captured.err and 'broken.jpg' in captured.err
    assert 'jellyfish.jpg: jellyfish (107)' in captured.out and 'snow_leopard.jpg: snow leopard (289)' in captured.out
    assert 'explaining' in captured.err  # the progress bar, for more than three files
    for stem in ('jellyfish', 'snow_leopard', 'hummingbird'):
        assert os.path.getsize(out / f'{stem}.png') > 10000
        cam = np.load(out / f'{stem}_gradcam.npy')
        assert cam.shape == (7, 7) and np.isfinite(cam).all()
        assert np.load(out / f'{stem}_guided_gradcam.npy').shape == (3, 224, 224)
        assert np.load(out / f'{stem}_saliency.npy').shape == (224, 224)
    assert not any(name.startswith('broken') for name in os.listdir(out))


def test_one_method_and_a_class_by_name(tmp_path, root, capsys):
    code = main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--method', 'saliency',
                 '--class', 'Snow Leopard'])
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == ['.gluoncam-run.json', 'index.csv', 'index.html', 'jellyfish.png',
                                            'jellyfish_saliency.npy']  # the index, report and run's options too
    by_id = tmp_path / 'by_id'
    assert main(['explain', PHOTO, '--root', root, '--out', str(by_id), '--method', 'saliency', '--class', '289']) == 0
    np.testing.assert_array_equal(np.load(tmp_path / 'jellyfish_saliency.npy'),
                                  np.load(by_id / 'jellyfish_saliency.npy'))


def test_every_family_of_methods_renders(tmp_path, root, capsys):
    methods = 'gradcam++,layercam,eigencam,guided-backprop,deconv,input-x-gradient'
    assert main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--method', methods]) == 0
    assert np.load(tmp_path / 'jellyfish_gradcam++.npy').shape == (7, 7)
    assert np.load(tmp_path / 'jellyfish_eigencam.npy').shape == (7, 7)
    for name in ('guided_backprop', 'deconv', 'input_x_gradient'):
        assert np.load(tmp_path / f'jellyfish_{name}.npy').shape == (3, 224, 224)
    assert os.path.getsize(tmp_path / 'jellyfish.png') > 10000


def test_the_other_families_by_name(tmp_path, root, capsys):
    """CAMs with passes of their own, propagation rules, a layer attribution and Deep Feature Factorization: each
    by its name, each map equal to the library function's (the catalog's defaults)."""
    from gluoncam import cams, layer_attribution, models, propagation
    from gluoncam.images import preprocess, read_rgb
    methods = 'fullgrad,fem,shapleycam,lrp,deeplift,layer-gradient-x-activation,dff'
    assert main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--method', methods]) == 0
    net = models.get_model('efficientnet_lite0', pretrained=True, root=root)
    x = preprocess(read_rgb(PHOTO), net)
    expected = {'fullgrad': cams.full_grad(net, x), 'fem': cams.cam(net, x, net.cam_layer, 'fem'),
                'shapleycam': cams.cam(net, x, net.cam_layer, 'shapleycam'), 'lrp': propagation.lrp(net, x),
                'deeplift': propagation.deeplift(net, x)[0],
                'layer_gradient_x_activation': layer_attribution.layer_gradient_x_activation(net, x, net.cam_layer)}
    for name, values in expected.items():
        np.testing.assert_allclose(np.load(tmp_path / f'jellyfish_{name}.npy'), values.asnumpy()[0], rtol=1e-4,
                                   atol=1e-5 * float(np.abs(values.asnumpy()).max()), err_msg=name)
    concepts = np.load(tmp_path / 'jellyfish_dff.npy')
    assert concepts.shape == (5, 7, 7) and (concepts >= 0).all()
    assert os.path.getsize(tmp_path / 'jellyfish.png') > 10000


def test_maps_from_the_shared_pass_equal_the_library_functions(tmp_path, root, capsys):
    """One recorded pass serves the gradient CAMs, guided backprop, deconvnet and input x gradient."""
    from gluoncam import cams, gradients, models
    from gluoncam.images import preprocess, read_rgb
    methods = 'gradcam++,eigencam,guided-backprop,deconv,input-x-gradient'
    assert main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--method', methods]) == 0
    net = models.get_model('efficientnet_lite0', pretrained=True, root=root)
    x = preprocess(read_rgb(PHOTO), net)
    expected = {'gradcam++': cams.cam(net, x, net.cam_layer, 'gradcam++'),
                'eigencam': cams.cam(net, x, net.cam_layer, 'eigencam'),
                'guided_backprop': gradients.gradient(net, x, mode='guided'),
                'deconv': gradients.gradient(net, x, mode='deconv'),
                'input_x_gradient': gradients.input_x_gradient(net, x)}
    for name, values in expected.items():
        got = np.load(tmp_path / f'jellyfish_{name}.npy')
        np.testing.assert_allclose(got, values.asnumpy()[0], rtol=1e-4, atol=1e-5 * np.abs(got).max())


def test_unknown_class_names_suggest_close_ones(tmp_path, root, capsys):
    assert main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--class', 'snow leopardd']) == 2
    assert "did you mean 'snow leopard'" in capsys.readouterr().err
    assert main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--class', '1000']) == 2
    assert "class ids are 0..999" in capsys.readouterr().err


def test_missing_weights_say_what_to_do(tmp_path, capsys):
    assert main(['explain', PHOTO, '--model', 'vgg11', '--root', str(tmp_path), '--out', str(tmp_path)]) == 2
    assert "--random-weights" in capsys.readouterr().err


def test_random_weights_run_vgg(tmp_path, capsys):
    out = tmp_path / 'out'
    assert main(['explain', PHOTO, '--model', 'vgg11', '--random-weights', '--root', str(tmp_path),
                 '--out', str(out), '--method', 'gradcam']) == 0
    assert 'RANDOM weights' in capsys.readouterr().out
    assert np.load(out / 'jellyfish_gradcam.npy').shape == (14, 14)


def test_layer_list_prints_the_names(tmp_path, root, capsys):
    assert main(['explain', PHOTO, '--root', root, '--layer', 'list']) == 0
    names = capsys.readouterr().out.split('\n')
    assert 'features.17' in names and 'features.4.depthwise' in names and 'output' in names


def test_a_dense_layer_is_refused_for_gradcam(tmp_path, root, capsys):
    assert main(['explain', PHOTO, '--root', root, '--out', str(tmp_path), '--layer', 'output']) == 2
    assert "Grad-CAM needs a 4-D layer" in capsys.readouterr().err


@pytest.mark.skipif(mx.context.num_gpus() > 0, reason='a GPU is present')
def test_gpu_context_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(['explain', PHOTO, '--ctx', 'gpu:0', '--out', str(tmp_path)]) == 2
    assert "MXNet sees 0 GPU" in capsys.readouterr().err


@pytest.mark.parametrize('argv, message', [
    (['nothing.jpg'], "no image file, folder or matching pattern"),
    ([PHOTO, '--ctx', 'tpu'], "expected 'cpu' or 'gpu:N'"),
    ([PHOTO, '--batch-size', '0'], "must be at least 1"),
])
def test_argument_errors(tmp_path, capsys, argv, message):
    assert main(['explain'] + argv + ['--out', str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_options_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['explain', PHOTO, '--method', 'nope'])
    assert exit_info.value.code == 2
    assert "unknown method 'nope'; valid: gradcam, gradcam++" in capsys.readouterr().err
