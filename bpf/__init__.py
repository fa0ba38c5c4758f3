"""The BPF C sources (classifier.bpf.c, record.bpf.c, include/*.h), shipped as package data of chaosinject.bpf:
found with importlib.resources from an install or a checkout alike. No Python here."""
