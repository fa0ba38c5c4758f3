# chaos-inject: the README's commands run these targets (as root on Debian 12).
SHELL := /bin/bash
VENV  ?= $(CURDIR)/.venv
PY    := $(VENV)/bin/python

.PHONY: setup demo test test-kernels test-unit test-host bench clean sweep notebook vagrant-box vagrant-smoke vagrant-lab test-vms

setup:            ## apt packages, kernel headers for bcc, venv with pinned pip packages (idempotent)
	VENV=$(VENV) bash scripts/setup-host.sh

demo: setup       ## the seed's experiment on the netns lab (api->db delay: 503 not 500), verdict, report; `chaos-inject demo --quick`: the loss demo
	$(VENV)/bin/chaos-inject demo

test: setup       ## every tier this machine can run; each tier reports its counts or why it was skipped
	bash scripts/run-tests.sh

test-kernels: setup  ## as test, with the kernel tier on Debian 6.1, 6.12 (backports) and 5.10 (Debian 11)
	KERNEL_SERIES="6.1 6.12 5.10" bash scripts/run-tests.sh

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-host: setup
	$(PY) -m pytest tests/host -q

vagrant-box:      ## the local Vagrant box (libvirt, Debian 12 stock kernel) from Debian packages; cached in .cache/vagrant-box
	bash scripts/vagrant-setup.sh
	bash vagrant/box/build.sh

vagrant-smoke: setup vagrant-box  ## one VM from the box under vagrant-libvirt (QEMU TCG) in a namespace of its own: chaos-inject from this checkout delays one flow with netem, destroy
	bash vagrant/smoke/smoke.sh

vagrant-lab: setup vagrant-box  ## db, api, prometheus VMs (libvirt, TCG) in a namespace of their own, the seed's experiment on them, run directory to .cache/vagrant-lab/runs, destroy
	bash vagrant/lab.sh

test-vms: setup    ## the vms tier (not in `make test`, which runs its smoke): tests/vms, smoke and the three-VM experiment, every crash point of both
	CHAOS_INJECT_CRASH_WALK=full bash scripts/vms-tier.sh tests/vms

bench: setup      ## prints figures; see bench/README.md
	$(PY) bench/classifier_cost.py
	$(PY) bench/apply_time.py
	$(PY) bench/lab_startup.py
	$(PY) bench/delay_engines.py --vm
	$(PY) bench/verdict_speed.py
	$(PY) bench/dependence_calibration.py
	$(PY) bench/record_rate.py
	$(PY) bench/record_overhead.py
	$(PY) bench/host_faults.py
	$(PY) bench/fault_onset.py
	$(PY) bench/startup_time.py

notebook: setup   ## JupyterLab on a run's post-experiment notebook: make notebook RUN=chaos-runs/demo-...
	$(VENV)/bin/chaos-inject notebook $(RUN)

sweep: setup      ## remove what dead runs left behind
	$(VENV)/bin/chaos-inject sweep

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
