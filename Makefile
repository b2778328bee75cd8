# The two commands of the README, and the set-up they share.
.PHONY: setup smoke test

setup:
	bash scripts/setup.sh

# Main job on the embedded default: the smoke profile (toy scale, CPU).
smoke: setup
	.venv/bin/gfl-repro run table3 --profile smoke
	.venv/bin/gfl-repro collect table3 --profile smoke --format markdown
	cat results/smoke/tables/table3.md

test: setup
	.venv/bin/python -m pytest -q
