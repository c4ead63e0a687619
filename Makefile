# The verbs of the project. PORT=8080 make up for another port than 80.
.PHONY: up down reset status test test-unit test-app faults compose-test swarm-test chart-test cluster cluster-status cluster-down cluster-test logs bench profile

up:  ## install what is missing, start the stack, return once it answers
	scripts/install-deps.sh
	scripts/stack.sh up

down:  ## stop the stack, keep the data
	scripts/stack.sh down

reset:  ## stop the stack and delete its data (the local `docker compose down -v`)
	scripts/stack.sh reset

status:  ## what is running
	scripts/stack.sh status

logs:  ## follow the app's and nginx's logs
	tail -F .stack/app/app.log .stack/relay/relay.log .stack/worker/worker.log .stack/nginx/access.log

test:  ## lint, the unit tier, then the suite and the fault drills, each against a throwaway stack
	scripts/test.sh

test-unit:  ## tests/unit alone: pure functions and files, no service, in seconds
	scripts/test.sh unit $(ARGS)

test-app:  ## the inner loop: tests/app (the app in-process) beside the running make up stack, under a minute
	scripts/test.sh app $(ARGS)

faults:  ## only the fault and security drills (tests/faults), on a throwaway stack
	scripts/test.sh faults

compose-test:  ## docker-compose.yml for real: engine, stand-in images, up, test_app.sh, down, down -v
	scripts/compose-test/run.sh

swarm-test:  ## deploy/swarm/stack.yml on a single-node swarm: deploy, test_app.sh and the coherence checker through the entry, a rolling update with no failed read, stack rm leaving nothing
	scripts/swarm-test/run.sh

chart-test:  ## the Helm chart (deploy/helm/api) without a cluster: helm lint --strict, each ci/ values file validated against Kubernetes 1.32's schemas, tests/chart
	WITH_CHART_TOOLS=1 scripts/install-deps.sh
	.venv/bin/pytest tests/chart -p no:cacheprovider -q $(ARGS)

cluster:  ## the product on several hosts of this machine (deploy/cluster/): entry on 127.0.0.1:PORT, 3 app hosts, an ops host, a highly available data tier
	WITH_CLUSTER=1 scripts/install-deps.sh
	.venv/bin/python deploy/cluster/cluster.py up $(ARGS)

cluster-status:  ## every host of the cluster, as JSON
	.venv/bin/python deploy/cluster/cluster.py status

cluster-down:  ## end every process of the cluster, remove its namespaces, links and data
	.venv/bin/python deploy/cluster/cluster.py down

cluster-test:  ## tests/cluster on a cluster of its own: L1 across hosts, the entry under faults, the checker per host, the data tier's failovers
	WITH_CLUSTER=1 WITH_TEST_TOOLS=1 scripts/install-deps.sh
	.venv/bin/pytest tests/cluster -p no:cacheprovider -r fE $(ARGS)

bench:  ## benchmark the cache levels against same-run baselines; writes docs/benchmarks.md
	WITH_TEST_TOOLS=1 scripts/install-deps.sh
	.venv/bin/python scripts/bench.py $(ARGS)

profile:  ## where a request's CPU goes, by process and by layer of the app; writes docs/profile.md
	WITH_TEST_TOOLS=1 scripts/install-deps.sh
	.venv/bin/python scripts/profile.py $(ARGS)
