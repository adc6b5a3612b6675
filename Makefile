# The two fresh-machine commands (see README.md): `make demo` and `make test`.
.PHONY: demo test bench crds clean

demo:
	@./scripts/bootstrap
	.venv/bin/oraculum demo

test:
	@./scripts/bootstrap
	@./scripts/test-services
	@./scripts/controlplane-build > /dev/null
	.venv/bin/python -m pytest -q

bench:
	@./scripts/bootstrap
	.venv/bin/python benchmarks/bench_ingest.py

clean:
	rm -rf oraculum-data .pytest_cache

# A real Kubernetes control plane on loopback for trying things by hand (scripts/controlplane):
# `make cluster` builds or reuses the binaries, starts it and prints `export KUBECONFIG=...`.
.PHONY: cluster cluster-stop
cluster:
	@./scripts/bootstrap
	@./scripts/controlplane start

cluster-stop:
	@./scripts/controlplane stop
