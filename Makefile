# The two commands a new user needs (see README.md).
.PHONY: test demo e2e

# Every gate CI runs: fmt, clippy, unit/multi-process/controller tests, chart checks, e2e.
test:
	scripts/test.sh
