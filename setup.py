"""Package layout (everything else is in pyproject.toml): one import name, ``chaosinject``, over the folders the
design keeps: injector/ is chaosinject, analysis/ is chaosinject.analysis, bpf/ is chaosinject.bpf (the BPF C
sources as package data), notebooks/ is chaosinject.notebooks (the shipped
notebooks). Subpackages, and data folders such as lab/experiments/, are found, not listed."""

from setuptools import find_namespace_packages, setup

ROOTS = {"chaosinject": "injector", "chaosinject.analysis": "analysis", "chaosinject.bpf": "bpf",
         "chaosinject.notebooks": "notebooks"}

packages = []
for name, folder in ROOTS.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"])]

setup(packages=packages, package_dir=ROOTS)
