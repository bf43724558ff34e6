"""tfmedgan: TensorFlow / Keras 3 generative models for medical images.

CPU install:  pip install -e ".[cpu]"        (tensorflow-cpu)
GPU install:  pip install -e ".[gpu]"        (tensorflow[and-cuda])
Tests:        pip install -e ".[cpu,test]" && python -m pytest
"""

from setuptools import find_packages, setup

TENSORFLOW = "2.21.0"

setup(
    name="tfmedgan",
    version="0.2.0",
    description="Generative models for medical images (3D CycleGAN, pix2pix+VAE UDA, DCGAN, StyleGAN2) in TF/Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfmedgan", "tfmedgan.*"]),
    install_requires=[
        "keras>=3.12,<4",
        "numpy>=1.26,<3",
        "scipy>=1.11",
        "h5py>=3.11,<3.15",
        "nibabel>=5.2",
        "scikit-image>=0.22",
        "matplotlib>=3.8",
        "pillow>=10",
        "tqdm>=4.66",
        "nilearn>=0.10",
        "neptune>=1.10,<2",
    ],
    extras_require={
        "cpu": [f"tensorflow-cpu=={TENSORFLOW}"],
        "gpu": [f"tensorflow[and-cuda]=={TENSORFLOW}"],
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
    },
)
