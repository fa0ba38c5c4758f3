"""Fault engines: ebpf, netem, edt, userspace (and the fake for tests); select.py chooses one."""
